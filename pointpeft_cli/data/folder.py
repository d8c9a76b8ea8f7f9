"""The ``folder`` task: a user's ``DIR/{train,test}/<class>/*.{npy,txt,xyz,ply}`` clouds (cli.md).

Classes are the ``train/`` sub-folders in sorted order. Each cloud is reduced once by FPS (start
index 0) to a common pool of ``point_all(points)`` points (fewer if the smallest cloud is
smaller, but never fewer than ``points``), cached as processed h5, and ``pc_normalize``d on read.
Because FPS sequences are prefix-consistent, test-time FPS of ``points`` from the pool equals
FPS of ``points`` from the original cloud.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from pointpeft_cli.data.base import PointDataset, check_cloud
from pointpeft_cli.data.fastfps import blocked_farthest_point_sample
from pointpeft_cli.data.fingerprint import digest, files_digest
from pointpeft_cli.data.io import POINT_SUFFIXES, atomic_h5, processed_path, read_cloud
from pointpeft_cli.data.sampling import point_all_for
from pointpeft_cli.errors import DataError


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in POINT_SUFFIXES)


def scan(data_dir: Path, split: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (from ``train/``) and ``(file, label)`` pairs of ``split``."""
    data_dir = Path(data_dir)
    train_dir, split_dir = data_dir / "train", data_dir / split
    for d in (train_dir, split_dir):
        if not d.is_dir():
            hint = "the folder task needs DIR/train and DIR/test"
            raise DataError(f"{d}: no such folder", hint=hint)
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{train_dir}: no class folders", hint="add DIR/train/<class>/ folders")
    items = []
    for d in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if d.name not in classes:
            raise DataError(
                f"{d}: class {d.name!r} has no folder in {train_dir}",
                hint="every test class needs training samples",
            )
        files = _files(d)
        if not files:
            kinds = "/".join(POINT_SUFFIXES)
            raise DataError(f"{d}: no {kinds} files", hint="add clouds or remove the folder")
        items += [(f, classes.index(d.name)) for f in files]
    if not items:
        raise DataError(f"{split_dir}: no point files", hint="add DIR/<split>/<class>/ files")
    return classes, items


def _pool(clouds: list[np.ndarray], points: int) -> list[np.ndarray]:
    """FPS each cloud to the same pool size, batched over clouds of equal size."""
    pool = point_all_for(points, min(len(c) for c in clouds))
    out: list[np.ndarray | None] = [None] * len(clouds)
    for size in sorted({len(c) for c in clouds}):
        rows = [i for i, c in enumerate(clouds) if len(c) == size]
        for start in range(0, len(rows), 64):
            part = rows[start : start + 64]
            batch = torch.from_numpy(np.stack([clouds[i] for i in part]))
            idx = blocked_farthest_point_sample(batch, pool)
            picked = torch.gather(batch, 1, idx.unsqueeze(-1).expand(-1, -1, 3)).numpy()
            for j, i in enumerate(part):
                out[i] = picked[j]
    return out  # type: ignore[return-value]


def load_folder(
    split: str, *, data_dir: Path | None, cache_root: Path, points: int, seed: int = 0
) -> PointDataset:
    """The ``split`` of a user folder as pooled, normalised clouds."""
    if data_dir is None:
        raise DataError("the folder task needs --data-dir", hint="pass --data-dir DIR")
    classes, items = scan(Path(data_dir), split)
    fp = files_digest([f for f, _ in items], Path(data_dir), kind="folder", points=points)
    out = processed_path(cache_root, f"folder-{split}", fp)
    if not out.exists():
        clouds = [check_cloud(read_cloud(f), f, points) for f, _ in items]
        with atomic_h5(out) as h5:
            h5.create_dataset("points", data=np.stack(_pool(clouds, points)))
            h5.create_dataset("label", data=np.array([lb for _, lb in items], dtype=np.int64))
    with h5py.File(out, "r") as h5:
        pts, labels = h5["points"][()], h5["label"][()]
    return PointDataset(
        pts, labels, classes, split, digest("folder", fp, classes), normalize=True, seed=seed
    )
