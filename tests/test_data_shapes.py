"""The procedural shapes task: determinism, balance, speed, variety, pretraining stream."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from pointpeft_cli.data.factory import build_dataset
from pointpeft_cli.data.shapes import ShapesDataset, ShapesPretrainStream, generate
from pointpeft_cli.tasks import SHAPES_CLASSES


def test_deterministic_per_seed_and_index():
    a, b = ShapesDataset("train", seed=5), ShapesDataset("train", seed=5)
    for i in (0, 13, 777):
        assert np.array_equal(a[i]["points"], b[i]["points"])
    assert not np.array_equal(a[0]["points"], ShapesDataset("train", seed=6)[0]["points"])
    assert not np.array_equal(a[0]["points"], ShapesDataset("test", seed=5)[0]["points"])
    # order of access does not matter
    c = ShapesDataset("train", seed=5)
    _ = c[777]
    assert np.array_equal(c[13]["points"], a[13]["points"])


def test_balanced_normalised_and_shaped(tmp_path: Path):
    ds = build_dataset("shapes", "train", data_dir=None, cache_root=tmp_path, points=1024)
    assert ds.class_names == SHAPES_CLASSES and len(SHAPES_CLASSES) == 12
    assert np.bincount(ds.labels, minlength=12).tolist() == [200] * 12
    item = ds[30]
    assert item["points"].shape == (1200, 3) and item["points"].dtype == np.float32
    assert np.isfinite(item["points"]).all()
    assert abs(np.linalg.norm(item["points"], axis=1).max() - 1) < 1e-5
    sub = build_dataset(
        "shapes", "test", data_dir=None, cache_root=tmp_path, points=1024, max_samples=120
    )
    assert np.bincount(sub.targets, minlength=12).tolist() == [10] * 12


def test_classes_differ_and_vary_within_class():
    rng = np.random.default_rng(0)

    def extent(label: int, k: int) -> np.ndarray:
        pts = generate(label, np.random.default_rng([1, label, k]), 1024)
        return np.sort(np.linalg.svd(pts - pts.mean(0), compute_uv=False))

    feats = np.array([[extent(c, k) for k in range(8)] for c in range(12)])  # [12, 8, 3]
    assert feats.std(axis=1).mean() > 1e-3  # random proportions and poses
    means = feats.mean(axis=1)
    dists = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert (dists[np.triu_indices(12, 1)] > 0).all()
    del rng


def test_generation_speed():
    ds = ShapesDataset("test", seed=0, points=1024)
    ds[0]
    start = time.perf_counter()
    n = 300
    for i in range(n):
        ds[i]
    rate = n / (time.perf_counter() - start)
    assert rate >= 500, f"{rate:.0f} samples/s"


def test_pretrain_stream_deterministic_and_worker_split():
    s = ShapesPretrainStream(seed=2, points=256, epoch_size=6)
    first = [it["points"] for it in s]
    assert len(first) == 6 and first[0].shape == (256, 3)
    assert all(np.array_equal(x, y) for x, y in zip(first, (it["points"] for it in s), strict=True))
    s.set_epoch(1)
    assert not np.array_equal(next(iter(s))["points"], first[0])
    s.set_epoch(0)
    loader = DataLoader(s, batch_size=None, num_workers=2)
    rows = sorted(int(it["index"]) for it in loader)
    assert rows == list(range(6))
