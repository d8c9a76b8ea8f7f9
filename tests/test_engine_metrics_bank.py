"""Metrics against hand-counted cases, and the memory-bank file format."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pointpeft_cli.engine.memory_bank import (
    MemoryBank,
    bank_cache_key,
    compute_bank,
    load_bank,
    save_bank,
)
from pointpeft_cli.engine.metrics import classification_report
from pointpeft_cli.errors import CorruptFileError


def test_classification_report_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 0, 1, 1, 0, 2])
    rep = classification_report(preds, labels, ["a", "b", "c", "d"])
    assert rep.accuracy == pytest.approx(4 / 6)
    assert rep.per_class == {"a": pytest.approx(2 / 3), "b": 0.5, "c": 1.0, "d": None}
    assert rep.mean_class_accuracy == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert rep.confusion_matrix[0] == [2, 1, 0, 0]
    assert rep.confusion_matrix[1] == [1, 1, 0, 0]
    assert sum(map(sum, rep.confusion_matrix)) == rep.num_samples == 6


def _batches(points: torch.Tensor, order: list[int], size: int):
    labels = torch.arange(points.shape[0]) % 3
    for start in range(0, len(order), size):
        idx = torch.tensor(order[start : start + size])
        yield points[idx], labels[idx], idx


def test_compute_bank_places_rows_by_index() -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(10, 16, 3, generator=gen)

    def feats(p: torch.Tensor) -> torch.Tensor:
        return p.amax(1) * 3.0

    a, la = compute_bank(feats, _batches(points, list(range(10)), 4), 10)
    b, lb = compute_bank(feats, _batches(points, [9, 3, 1, 0, 2, 8, 4, 6, 5, 7], 3), 10)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    expected = torch.nn.functional.normalize(points.amax(1), dim=1).numpy()
    assert np.allclose(a, expected, atol=1e-6)
    with pytest.raises(CorruptFileError, match="incomplete"):
        compute_bank(feats, _batches(points, [0, 1, 2], 2), 10)


def test_bank_round_trip_and_corruption(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((7, 5)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    bank = MemoryBank(feats, np.arange(7), {"backbone": "point-mae", "split": "train"})
    path = save_bank(tmp_path / "bank.h5", bank)
    again = load_bank(path)
    assert np.array_equal(again.features, feats) and again.meta == bank.meta
    assert (again.num_samples, again.feature_dim) == (7, 5)

    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CorruptFileError):
        load_bank(truncated)
    nan = tmp_path / "nan.h5"
    bad = feats.copy()
    bad[2, 1] = np.nan
    save_bank(nan, MemoryBank(bad, np.arange(7), {}))
    with pytest.raises(CorruptFileError, match="NaN"):
        load_bank(nan)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh.create_dataset("features", data=feats)
    with pytest.raises(CorruptFileError, match="not a pointpeft memory bank"):
        load_bank(other)


def test_cache_key_changes_with_each_input() -> None:
    base = bank_cache_key("aa", "bb", {"points": 1024})
    assert base == bank_cache_key("aa", "bb", {"points": 1024})
    assert len({base, bank_cache_key("ab", "bb", {"points": 1024}),
                bank_cache_key("aa", "bc", {"points": 1024}),
                bank_cache_key("aa", "bb", {"points": 2048})}) == 4  # fmt: skip
