"""Batch augmentations from the upstream runners (method.md §8); each takes an explicit generator.

All take a ``[B, N, 3]`` float tensor and a ``numpy.random.Generator`` and return a new tensor;
the random draws are small per-sample arrays, the arithmetic is vectorised torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _per_sample(rng: np.random.Generator, low: float, high: float, batch: int, like: Tensor):
    return torch.from_numpy(rng.uniform(low, high, size=(batch, 1, 3))).to(like.dtype)


def scale_and_translate(
    points: Tensor,
    rng: np.random.Generator,
    scale_low: float = 2.0 / 3.0,
    scale_high: float = 3.0 / 2.0,
    translate: float = 0.2,
) -> Tensor:
    """``PointcloudScaleAndTranslate``: per-sample per-axis scale U(low, high), shift U(-t, t)."""
    batch = points.shape[0]
    scale = _per_sample(rng, scale_low, scale_high, batch, points).to(points.device)
    out = points * scale
    if translate:
        out = out + _per_sample(rng, -translate, translate, batch, points).to(points.device)
    return out


def rotate_y(points: Tensor, rng: np.random.Generator) -> Tensor:
    """``PointcloudRotate``: one rotation about the y axis by U(-pi, pi) for the whole batch."""
    angle = float(rng.uniform(-math.pi, math.pi))
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=points.dtype)
    return points @ rot.to(points.device)


def scale_and_rotate(
    points: Tensor, rng: np.random.Generator, scale_low: float = 0.9, scale_high: float = 1.1
) -> Tensor:
    """ScanObjectNN "aug": per-axis scale U(0.9, 1.1), no shift, then a batch y-rotation."""
    return rotate_y(scale_and_translate(points, rng, scale_low, scale_high, 0.0), rng)


AUGMENTATIONS = {
    "scale_translate": scale_and_translate,
    "scale_rotate": scale_and_rotate,
    "none": lambda points, rng: points,
}


def augment(points: Tensor, name: str, rng: np.random.Generator) -> Tensor:
    """Apply the augmentation called ``name`` (keys of ``AUGMENTATIONS``)."""
    from pointpeft_cli.errors import ConfigError

    try:
        fn = AUGMENTATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown augmentation {name!r}", hint=f"use one of {', '.join(AUGMENTATIONS)}"
        ) from None
    return fn(points, rng)
