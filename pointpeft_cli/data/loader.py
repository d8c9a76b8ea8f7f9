"""Seeded DataLoaders: one seed gives the same batches in the same order, with any worker count."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pointpeft_cli.data.base import collate


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive numpy/random from that seed.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader whose order and worker seeds come only from ``seed``.

    Items are collated by :func:`pointpeft_cli.data.base.collate` into
    ``{"points": [B, N, 3], "label": [B], "index": [B]}``. Call ``dataset.set_epoch(e)`` and
    iterate once per epoch; the shuffle order advances with the loader's own generator.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate,
        generator=generator,
        worker_init_fn=_worker_init,
        persistent_workers=False,
    )
