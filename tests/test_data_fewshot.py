"""ModelNet40 few-shot: upstream .pkl episodes and deterministic generation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from test_data_factories import blob, write_modelnet_h5

from pointpeft_cli.data.factory import build_dataset
from pointpeft_cli.data.modelnet40_fewshot import make_episode
from pointpeft_cli.errors import CorruptFileError, DataError, UnsafeFileError
from pointpeft_cli.tasks import MODELNET40_CLASSES


def test_episode_follows_upstream_protocol():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 40, 4000)
    test = np.repeat(np.arange(40), 25)
    ep = make_episode(train, test, way=5, shot=10, fold=3)
    assert len(set(ep.classes.tolist())) == 5
    assert np.bincount(ep.train_labels).tolist() == [10] * 5
    assert np.bincount(ep.test_labels).tolist() == [20] * 5
    assert np.array_equal(train[ep.train_rows], ep.classes[ep.train_labels])
    assert np.array_equal(test[ep.test_rows], ep.classes[ep.test_labels])
    assert len(set(ep.train_rows.tolist())) == 50 and len(set(ep.test_rows.tolist())) == 100
    again = make_episode(train, test, way=5, shot=10, fold=3)
    assert np.array_equal(again.train_rows, ep.train_rows)
    other = make_episode(train, test, way=5, shot=10, fold=4)
    assert not np.array_equal(other.train_rows, ep.train_rows)
    with pytest.raises(DataError, match="20"):
        make_episode(train, np.repeat(np.arange(40), 5), way=5, shot=10, fold=0)


def test_generated_from_h5_release(tmp_path: Path):
    labels = {"train": [c for c in range(6) for _ in range(12)], "test": list(range(6)) * 20}
    write_modelnet_h5(tmp_path / "mn", labels, n=1100)
    kw = {"data_dir": tmp_path / "mn", "cache_root": tmp_path, "points": 1024}
    tr = build_dataset("modelnet40-fewshot", "train", way=5, shot=10, fold=1, **kw)
    te = build_dataset("modelnet40-fewshot", "test", way=5, shot=10, fold=1, **kw)
    assert len(tr) == 50 and len(te) == 100
    assert tr.class_names == te.class_names and len(tr.class_names) == 5
    assert set(tr.class_names) <= set(MODELNET40_CLASSES[:6])
    assert sorted(set(tr.labels.tolist())) == list(range(5))
    assert (
        tr.fingerprint()
        != build_dataset("modelnet40-fewshot", "train", way=5, shot=10, fold=2, **kw).fingerprint()
    )


def _write_pkl(path: Path, way: int = 5) -> None:
    rng = np.random.default_rng(0)
    orig = [7, 0, 33, 8, 19][:way]

    def items(n):
        return [
            (np.concatenate([blob(rng, 8192), blob(rng, 8192)], 1), i % way, np.int32(o))
            for i in range(n)
            for o in [orig[i % way]]
        ]

    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        pickle.dump({"train": items(way * 2), "test": items(way * 3)}, f)


def test_pkl_needs_trust_and_maps_names(tmp_path: Path):
    path = tmp_path / "ModelNetFewshot" / "5way_10shot" / "2.pkl"
    _write_pkl(path)
    kw = {"data_dir": tmp_path, "cache_root": tmp_path, "points": 1024, "way": 5, "shot": 10}
    with pytest.raises(UnsafeFileError, match=r"2\.pkl"):
        build_dataset("modelnet40-fewshot", "train", fold=2, **kw)
    ds = build_dataset("modelnet40-fewshot", "test", fold=2, trust_pickle=True, **kw)
    assert ds.class_names == ("car", "airplane", "table", "chair", "lamp")
    assert len(ds) == 15 and ds[0]["points"].shape == (8192, 3)
    assert abs(np.linalg.norm(ds[0]["points"], axis=1).max() - 1) < 1e-5
    with pytest.raises(DataError, match=r"7\.pkl"):
        build_dataset("modelnet40-fewshot", "train", fold=7, trust_pickle=True, **kw)
    with path.open("wb") as f:
        pickle.dump({"train": [(np.zeros((10, 3)), 9, 1)]}, f)
    with pytest.raises(CorruptFileError, match=r"2\.pkl"):
        build_dataset("modelnet40-fewshot", "train", fold=2, trust_pickle=True, **kw)
