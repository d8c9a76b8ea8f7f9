"""The one dataset interface every task uses, plus shared validation.

Error policy for data (exit codes from ``errors.py``):

* exit 2 (``DataError``): the user's layout or request cannot be used as given: a missing file or
  folder in a ``--data-dir``, an unknown class in a list, clouds with fewer points than the task
  needs, too few samples for a few-shot episode.
* exit 3 (``AssetNotCachedError``): the asset is not in the cache at all.
* exit 4 (``CorruptFileError`` / ``UnsafeFileError``): a file's content is invalid in its
  declared format: unparseable text, wrong h5 keys or shapes, NaN/inf, empty clouds, labels out
  of range; or a pickle that was not trusted explicitly.

Every message names the file involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pointpeft_cli.errors import CorruptFileError, DataError


def pc_normalize(points: np.ndarray) -> np.ndarray:
    """Centre on the centroid and scale to unit max radius (upstream ``pc_normalize``)."""
    centred = points - points.mean(axis=0, keepdims=True)
    radius = float(np.sqrt((centred**2).sum(axis=1)).max()) if len(centred) else 0.0
    return (centred / radius if radius > 0 else centred).astype(np.float32, copy=False)


def check_cloud(points: np.ndarray, source: str | Path, min_points: int = 1) -> np.ndarray:
    """Validate one cloud: shape ``[N, >=3]``, finite, non-empty, at least ``min_points``.

    Returns:
        The xyz columns as float32 ``[N, 3]``.
    """
    if points.ndim != 2 or points.shape[1] < 3:
        raise CorruptFileError(
            f"{source}: expected points of shape [N, 3+], got {list(points.shape)}",
            hint="each row must hold x, y, z (extra columns such as normals are ignored)",
        )
    xyz = np.ascontiguousarray(points[:, :3], dtype=np.float32)
    if len(xyz) == 0:
        raise CorruptFileError(f"{source}: the point cloud is empty", hint="remove or fix the file")
    check_finite(xyz, source)
    if len(xyz) < min_points:
        raise DataError(
            f"{source}: {len(xyz)} points, fewer than the {min_points} this task needs",
            hint="use denser clouds or a smaller --points",
        )
    return xyz


def check_finite(array: np.ndarray, source: str | Path) -> None:
    """Raise ``CorruptFileError`` naming ``source`` if ``array`` holds NaN or inf."""
    if not np.isfinite(array).all():
        raise CorruptFileError(
            f"{source}: points contain NaN or inf values", hint="re-export or remove the file"
        )


def check_labels(labels: np.ndarray, num_classes: int, source: str | Path) -> np.ndarray:
    """Labels as int64 ``[S]``, each in ``[0, num_classes)``."""
    flat = np.asarray(labels).reshape(-1)
    integral = np.issubdtype(flat.dtype, np.integer)
    if flat.size and not integral and not np.all(np.equal(np.mod(flat, 1), 0)):
        raise CorruptFileError(f"{source}: labels are not integers", hint="check the file")
    flat = flat.astype(np.int64)
    bad = (flat < 0) | (flat >= num_classes)
    if bad.any():
        raise CorruptFileError(
            f"{source}: label {int(flat[bad][0])} is outside [0, {num_classes})",
            hint="the file does not match this task's class list",
        )
    return flat


class PointDataset(Dataset):
    """Map-style dataset: items ``{"points": float32 [N, 3], "label": int, "index": int}``.

    ``index`` is the item's row in this dataset (the memory bank's exclude-self option uses it).
    Train splits shuffle the point order per item with a generator seeded by
    ``(seed, epoch, index)``; call :meth:`set_epoch` each epoch.

    Attributes:
        class_names: label order.
        split: ``"train"`` or ``"test"``.
        num_points: points per item.
        normalized: whether items are ``pc_normalize``d.
    """

    def __init__(
        self,
        points: np.ndarray | Sequence[np.ndarray],
        labels: np.ndarray,
        class_names: Sequence[str],
        split: str,
        fingerprint: str,
        *,
        normalize: bool,
        shuffle_points: bool | None = None,
        seed: int = 0,
    ) -> None:
        self._points = points
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = tuple(class_names)
        self.split = split
        self.normalized = normalize
        self.shuffle_points = split == "train" if shuffle_points is None else shuffle_points
        self.seed = seed
        self.epoch = 0
        self._fingerprint = fingerprint
        self.num_points = int(points[0].shape[0]) if len(points) else 0
        self.indices = np.arange(len(self.labels))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        row = int(self.indices[index])
        pts = np.asarray(self._points[row], dtype=np.float32)
        if self.normalized:
            pts = pc_normalize(pts)
        if self.shuffle_points:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            pts = pts[rng.permutation(len(pts))]
        return {"points": pts, "label": int(self.labels[row]), "index": int(index)}

    @property
    def targets(self) -> np.ndarray:
        """Labels of the items in dataset order (after any subset)."""
        return self.labels[self.indices]

    def set_epoch(self, epoch: int) -> None:
        """Select the per-epoch point-order shuffle (train splits)."""
        self.epoch = int(epoch)

    def fingerprint(self) -> str:
        """Stable hash of the source files' identity and the preprocessing parameters."""
        if len(self.indices) == len(self.labels):
            return self._fingerprint
        from pointpeft_cli.data.fingerprint import digest

        return digest(self._fingerprint, self.indices.tolist())

    def subset(self, max_samples: int | None, seed: int = 0) -> PointDataset:
        """Restrict to a deterministic stratified subset of at most ``max_samples`` items."""
        if max_samples is None or max_samples >= len(self.indices):
            return self
        if max_samples < 1:
            raise DataError(f"max samples must be >= 1, got {max_samples}", hint="use e.g. 256")
        keep = stratified_subset(self.targets, max_samples, seed)
        self.indices = self.indices[keep]
        return self


def stratified_subset(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Sorted positions of a class-proportional sample of ``k`` labels (largest remainder)."""
    rng = np.random.default_rng([seed, 7919])
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (k / len(labels))
    quota = np.floor(exact).astype(int)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: k - int(quota.sum())]] += 1
    picked = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack items into ``points [B, N, 3]``, ``label [B]`` and ``index [B]`` tensors."""
    out = {"points": torch.from_numpy(np.stack([it["points"] for it in items]))}
    for key in ("label", "index"):
        if key in items[0]:
            out[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
    return out
