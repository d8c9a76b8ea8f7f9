"""Batch-level point sampling as the upstream runners do it (method.md §8), in torch.

Train: FPS to ``point_all`` (1024 -> 1200, 2048 -> 2400, 4096 -> 4800, 8192 -> 8192, capped at the
cloud size), then one random choice of ``npoints`` of those columns for the whole batch
(upstream's ``np.random.choice(point_all, npoints, False)``). Test: FPS ``npoints`` from index 0,
which is deterministic, so :class:`FixedSampleDataset` computes it once per item.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pointpeft_cli.errors import DataError
from pointpeft_cli.models.ops import farthest_point_sample, gather_points

_POINT_ALL = {1024: 1200, 2048: 2400, 4096: 4800, 8192: 8192}


def point_all_for(npoints: int, available: int) -> int:
    """Upstream's FPS pool size for ``npoints``, capped at ``available`` points."""
    if npoints > available:
        raise DataError(
            f"clouds have {available} points, fewer than the {npoints} requested",
            hint="use a smaller --points",
        )
    # Other sizes keep upstream's ratio (1200 / 1024 = 75 / 64).
    pool = _POINT_ALL.get(npoints, math.ceil(npoints * 75 / 64))
    return min(pool, available)


def fps_points(points: Tensor, n: int) -> Tensor:
    """The ``n`` FPS points (start index 0) of each cloud in ``[B, N, 3]``."""
    if n == points.shape[1]:
        return points
    return gather_points(points, farthest_point_sample(points, n))


def sample_train_batch(points: Tensor, npoints: int, generator: torch.Generator) -> Tensor:
    """Train sampling: FPS to ``point_all``, then a random ``npoints`` of them ``[B, npoints, 3]``.

    Args:
        points: ``[B, N, 3]`` float clouds (already shuffled per item by the dataset).
        npoints: points the model sees.
        generator: the only source of randomness.
    """
    pool = point_all_for(npoints, points.shape[1])
    idx = farthest_point_sample(points, pool)
    cols = torch.randperm(pool, generator=generator)[:npoints].to(idx.device)
    return gather_points(points, idx[:, cols])


def sample_test_batch(points: Tensor, npoints: int) -> Tensor:
    """Test sampling: deterministic FPS of ``npoints`` from index 0, ``[B, npoints, 3]``."""
    if npoints > points.shape[1]:
        point_all_for(npoints, points.shape[1])  # raises the standard error
    return fps_points(points, npoints)


def vote_batches(points: Tensor, npoints: int, votes: int, rng: np.random.Generator):
    """Upstream voting views: FPS ``point_all`` once, then per vote a random ``npoints`` subset
    with ``scale_and_translate``; the evaluator averages the logits over the views.

    Yields:
        ``votes`` tensors ``[B, npoints, 3]``.
    """
    from pointpeft_cli.data.transforms import scale_and_translate

    pool = point_all_for(npoints, points.shape[1])
    pooled = fps_points(points, pool)
    for _ in range(votes):
        cols = torch.from_numpy(rng.choice(pool, npoints, replace=False))
        yield scale_and_translate(pooled[:, cols], rng)


class FixedSampleDataset(Dataset):
    """A dataset's items reduced once to their test-time FPS points (no per-epoch FPS).

    Items keep the base dataset's ``label``/``index`` and get ``points [npoints, 3]``.
    """

    def __init__(self, base: Dataset, npoints: int, batch_size: int = 64) -> None:
        self.base = base
        self.class_names = getattr(base, "class_names", ())
        self.split = getattr(base, "split", "test")
        self.num_points = npoints
        items = [base[i] for i in range(len(base))]  # type: ignore[arg-type]
        chunks = []
        for start in range(0, len(items), batch_size):
            block = np.stack([it["points"] for it in items[start : start + batch_size]])
            chunks.append(sample_test_batch(torch.from_numpy(block), npoints).numpy())
        self._points = np.concatenate(chunks) if chunks else np.zeros((0, npoints, 3), np.float32)
        self._items = [{k: v for k, v in it.items() if k != "points"} for it in items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict:
        return {"points": self._points[index], **self._items[index]}

    def fingerprint(self) -> str:
        """The base dataset's fingerprint plus the point count."""
        from pointpeft_cli.data.fingerprint import digest

        return digest(self.base.fingerprint(), "fps", self.num_points)  # type: ignore[attr-defined]
