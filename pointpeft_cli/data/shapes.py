"""The embedded procedural ``shapes`` task: 12 classes of composite objects, deterministic.

Sample ``i`` of a split is drawn from ``default_rng([seed, stream, i])`` (stream 0 = train,
1 = test, 2 = unlabelled pretraining), with label ``i % 12`` (balanced). Each object gets random
proportions and parts (``shapes_catalog``), a random yaw and a small tilt, anisotropic scaling,
area-weighted surface points, Gaussian noise, sometimes a partial view (points beyond a random
plane dropped, as if seen from one side) and sometimes clutter (a stray primitive), and is then
``pc_normalize``d like ModelNet40.
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from pointpeft_cli.data.base import pc_normalize
from pointpeft_cli.data.fingerprint import digest
from pointpeft_cli.data.primitives import Parts, rotation_matrices, sample_surface
from pointpeft_cli.data.shapes_catalog import BUILDERS
from pointpeft_cli.errors import DataError
from pointpeft_cli.tasks import SHAPES_CLASSES

STREAMS = {"train": 0, "test": 1, "pretrain": 2}
DEFAULT_SIZES = {"train": 2400, "test": 600}
P_PARTIAL = 0.35
P_CLUTTER = 0.3


def _clutter(rng: np.random.Generator) -> np.ndarray:
    p = Parts()
    at = (rng.uniform(-0.9, 0.9), rng.uniform(-0.1, 0.5), rng.uniform(-0.9, 0.9))
    s = rng.uniform(0.05, 0.2, size=3)
    if rng.random() < 0.5:
        p.box(*s, at, tuple(rng.uniform(-1, 1, 3)))
    else:
        p.ellipsoid(*s, at)
    return p.array()


def generate(label: int, rng: np.random.Generator, points: int) -> np.ndarray:
    """One normalised cloud ``[points, 3]`` float32 of class ``SHAPES_CLASSES[label]``."""
    rows = BUILDERS[SHAPES_CLASSES[label]](rng).array()
    keep = rng.uniform(0.55, 0.85) if rng.random() < P_PARTIAL else 1.0
    n = math.ceil(points / keep)
    pts = sample_surface(rows, n, rng)
    pts = pts - pts.mean(axis=0)
    pts /= np.abs(pts).max() + 1e-9
    if rng.random() < P_CLUTTER:
        k = int(n * rng.uniform(0.03, 0.1))
        pts[rng.choice(n, k, replace=False)] = sample_surface(_clutter(rng), k, rng)
    pts *= rng.uniform(0.85, 1.15, size=3)
    angles = np.array([[rng.normal(0, 0.06), rng.uniform(0, 2 * np.pi), rng.normal(0, 0.06)]])
    pts = pts @ rotation_matrices(angles)[0].T
    pts += rng.normal(0.0, rng.uniform(0.004, 0.015), size=pts.shape)
    if keep < 1.0:
        view = rng.standard_normal(3)
        depth = pts @ (view / np.linalg.norm(view))
        pts = pts[np.argpartition(-depth, points - 1)[:points]]
    else:
        pts = pts[:points]
    return pc_normalize(pts[rng.permutation(len(pts))].astype(np.float32))


class ShapesDataset(Dataset):
    """A split of the ``shapes`` task; same items for the same ``(seed, split, size, points)``.

    Items are ``{"points": float32 [points, 3], "label": int, "index": int}``; the train split's
    point order is re-shuffled per epoch (:meth:`set_epoch`) like the other datasets.
    """

    class_names = SHAPES_CLASSES

    def __init__(self, split: str, *, seed: int = 0, size: int | None = None, points: int = 1200):
        if split not in ("train", "test"):
            raise DataError(f"unknown split {split!r}", hint="use 'train' or 'test'")
        self.split = split
        self.seed = int(seed)
        self.size = DEFAULT_SIZES[split] if size is None else int(size)
        self.num_points = int(points)
        self.normalized = True
        self.epoch = 0
        self.indices = np.arange(self.size)

    @property
    def labels(self) -> np.ndarray:
        return np.arange(self.size) % len(SHAPES_CLASSES)

    @property
    def targets(self) -> np.ndarray:
        return self.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        row = int(self.indices[index])
        label = row % len(SHAPES_CLASSES)
        rng = np.random.default_rng([self.seed, STREAMS[self.split], row])
        pts = generate(label, rng, self.num_points)
        if self.split == "train" and self.epoch:
            pts = pts[np.random.default_rng([self.seed, self.epoch, index]).permutation(len(pts))]
        return {"points": pts, "label": label, "index": int(index)}

    def set_epoch(self, epoch: int) -> None:
        """Select the per-epoch point-order shuffle (train split)."""
        self.epoch = int(epoch)

    def fingerprint(self) -> str:
        """Hash of the generator parameters (and the subset, if any)."""
        subset = self.indices.tolist()
        return digest("shapes", self.seed, self.split, self.size, self.num_points, subset)

    def subset(self, max_samples: int | None, seed: int = 0) -> ShapesDataset:
        """Keep a balanced deterministic subset of at most ``max_samples`` items."""
        from pointpeft_cli.data.base import stratified_subset

        if max_samples is not None and max_samples < len(self.indices):
            self.indices = self.indices[stratified_subset(self.targets, max_samples, seed)]
        return self


class ShapesPretrainStream(IterableDataset):
    """Unlabelled clouds from the same generator (stream 2) for pre-training.

    One epoch yields ``epoch_size`` items ``{"points", "index"}`` (``None`` = endless); epoch
    ``e`` draws items ``e * epoch_size ...``, split across DataLoader workers without overlap.
    """

    def __init__(self, seed: int = 0, points: int = 1024, epoch_size: int | None = 4800):
        self.seed, self.points, self.epoch_size, self.epoch = int(seed), int(points), epoch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        start = self.epoch * (self.epoch_size or 0)
        i = wid
        while self.epoch_size is None or i < self.epoch_size:
            row = start + i
            rng = np.random.default_rng([self.seed, STREAMS["pretrain"], row])
            label = int(rng.integers(len(SHAPES_CLASSES)))
            yield {"points": generate(label, rng, self.points), "index": row}
            i += nw
