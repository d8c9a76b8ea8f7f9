"""Batch sampling, transforms, seeded loaders, blocked FPS and stratified subsets."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from pointpeft_cli.data.base import PointDataset, stratified_subset
from pointpeft_cli.data.fastfps import blocked_farthest_point_sample
from pointpeft_cli.data.loader import make_loader
from pointpeft_cli.data.sampling import (
    FixedSampleDataset,
    point_all_for,
    sample_test_batch,
    sample_train_batch,
    vote_batches,
)
from pointpeft_cli.data.shapes import ShapesDataset
from pointpeft_cli.data.transforms import augment, rotate_y, scale_and_rotate, scale_and_translate
from pointpeft_cli.errors import ConfigError, DataError
from pointpeft_cli.models.ops import farthest_point_sample


def test_point_all_table():
    assert [point_all_for(n, 8192) for n in (1024, 2048, 4096, 8192)] == [1200, 2400, 4800, 8192]
    assert point_all_for(2048, 2048) == 2048  # ScanObjectNN: capped at the cloud size
    with pytest.raises(DataError):
        point_all_for(4096, 2048)


def test_train_and_test_sampling():
    pts = torch.randn(4, 3000, 3)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, b = sample_train_batch(pts, 1024, g1), sample_train_batch(pts, 1024, g2)
    assert a.shape == (4, 1024, 3) and torch.equal(a, b)
    pool = set(map(tuple, pts[0][farthest_point_sample(pts[:1], 1200)[0]].tolist()))
    assert set(map(tuple, a[0].tolist())) <= pool
    assert len(set(map(tuple, a[0].tolist()))) == 1024
    t = sample_test_batch(pts, 1024)
    assert torch.equal(t, sample_test_batch(pts, 1024))
    assert torch.equal(t[:, 0], pts[:, 0])  # FPS starts at index 0


def test_train_sampling_is_fast_enough():
    pts = torch.randn(32, 8192, 3)
    sample_train_batch(pts[:2, :2000], 1024, torch.Generator().manual_seed(0))  # warm-up
    times = []
    for _ in range(2):
        start = time.perf_counter()
        sample_train_batch(pts, 1024, torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - start)
    assert min(times) < 3.0  # ~0.2 s on 2 idle cores; generous for a busy CI box


def test_fixed_sample_dataset_matches_batch_fps():
    base = ShapesDataset("test", seed=1, size=10)
    fixed = FixedSampleDataset(base, 1024, batch_size=4)
    batch = torch.from_numpy(np.stack([base[i]["points"] for i in range(10)]))
    want = sample_test_batch(batch, 1024)
    assert np.array_equal(np.stack([fixed[i]["points"] for i in range(10)]), want.numpy())
    assert fixed[3]["label"] == base[3]["label"] and fixed[3]["index"] == 3


def test_transforms_ranges_and_determinism():
    pts = torch.ones(8, 5, 3)
    out = scale_and_translate(pts, np.random.default_rng(0))
    assert torch.equal(out, scale_and_translate(pts, np.random.default_rng(0)))
    assert out.min() >= 2 / 3 - 0.2 - 1e-6 and out.max() <= 1.5 + 0.2 + 1e-6
    # per-sample values differ, points within a sample share the transform
    assert torch.unique(out[:, 0, 0]).numel() == 8 and torch.equal(out[:, 0], out[:, 4])
    rot = rotate_y(torch.randn(3, 50, 3), np.random.default_rng(1))
    src = torch.randn(3, 50, 3)
    rot = rotate_y(src, np.random.default_rng(1))
    assert torch.allclose(rot[..., 1], src[..., 1])  # y is the rotation axis
    assert torch.allclose(rot.norm(dim=-1), src.norm(dim=-1), atol=1e-5)
    aug = scale_and_rotate(torch.ones(4, 2, 3), np.random.default_rng(2))
    assert ((aug[..., 1] >= 0.9 - 1e-6) & (aug[..., 1] <= 1.1 + 1e-6)).all()
    with pytest.raises(ConfigError):
        augment(pts, "jitter", np.random.default_rng(0))


def test_vote_batches():
    pts = torch.randn(2, 1500, 3)
    views = list(vote_batches(pts, 1024, 3, np.random.default_rng(0)))
    assert len(views) == 3 and all(v.shape == (2, 1024, 3) for v in views)
    assert not torch.equal(views[0], views[1])


def test_seeded_loader_gives_identical_batches():
    def batches(seed, workers):
        ds = ShapesDataset("train", seed=0, size=24, points=64)
        ds.set_epoch(1)
        return list(make_loader(ds, 5, True, True, seed, num_workers=workers))

    a, b = batches(3, 0), batches(3, 2)
    assert len(a) == 4
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["points"], y["points"]) and torch.equal(x["label"], y["label"])
        assert torch.equal(x["index"], y["index"])
    assert not torch.equal(batches(4, 0)[0]["index"], a[0]["index"])


def test_blocked_fps_equals_dense_fps():
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(3, 700, 3, generator=g)
        x[:, 100] = x[:, 50]  # duplicates force exact ties
        assert torch.equal(blocked_farthest_point_sample(x, 600), farthest_point_sample(x, 600))
    assert blocked_farthest_point_sample(x, 0).shape == (3, 0)
    with pytest.raises(DataError):
        blocked_farthest_point_sample(x, 701)


def test_stratified_subset_and_dataset_subset():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    keep = stratified_subset(labels, 10, seed=0)
    assert np.bincount(labels[keep]).tolist() == [5, 3, 2]
    assert np.array_equal(keep, stratified_subset(labels, 10, seed=0))
    ds = PointDataset(np.zeros((100, 4, 3), np.float32), labels, "abc", "test", "fp",
                      normalize=False)  # fmt: skip
    full = ds.fingerprint()
    ds.subset(10)
    assert len(ds) == 10 and ds[9]["index"] == 9 and ds.fingerprint() != full
    assert math.isclose(ds.targets.mean(), labels[keep].mean())
