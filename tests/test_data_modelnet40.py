"""ModelNet40 loaders: real fixture files, text/.dat/h5-2048 layouts, subsets and bad data."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_data_factories import write_modelnet_dat, write_modelnet_h5, write_modelnet_text

from pointpeft_cli.data.factory import build_dataset
from pointpeft_cli.errors import (
    AssetNotCachedError,
    CorruptFileError,
    DataError,
    UnsafeFileError,
)
from pointpeft_cli.tasks import MODELNET40_CLASSES


def _mn(split, data_dir, cache, **kw):
    kw.setdefault("points", 1024)
    return build_dataset("modelnet40", split, data_dir=data_dir, cache_root=cache, **kw)


def test_real_fixture_files_load_with_official_label_order(shared_dir: Path, tmp_path: Path):
    root = shared_dir / "fixtures" / "modelnet40_normal_resampled"
    train = _mn("train", root, tmp_path)
    test = _mn("test", root, tmp_path)
    assert train.class_names == test.class_names == ("airplane", "bathtub")
    ids = (root / "modelnet40_train.txt").read_text().split()
    expected = [0 if i.startswith("airplane") else 1 for i in ids]
    assert [train[i]["label"] for i in range(len(train))] == expected
    item = test[0]
    assert item["points"].shape == (8192, 3) and item["points"].dtype == np.float32
    radius = np.linalg.norm(item["points"], axis=1)
    assert abs(radius.max() - 1.0) < 1e-5
    assert np.abs(item["points"].mean(0)).max() < 1e-5
    # every processed point is one of the file's points (FPS picks, no resampling)
    raw = np.loadtxt(root / "airplane" / "airplane_0003.txt", delimiter=",")[:, :3]
    first = _mn("test", root, tmp_path)._points[0]
    assert first.shape == (8192, 3)
    assert np.allclose(first[0], raw[0], atol=1e-6)  # FPS starts at index 0
    assert len(np.unique(first, axis=0)) == 8192


def test_processed_cache_is_reused_and_fingerprint_stable(shared_dir: Path, tmp_path: Path):
    root = shared_dir / "fixtures"
    a = _mn("test", root, tmp_path)
    files = sorted((tmp_path / "processed").glob("*.h5"))
    assert len(files) == 1 and not list((tmp_path / "processed").glob("*.incomplete"))
    mtime = files[0].stat().st_mtime_ns
    b = _mn("test", root, tmp_path)
    assert files[0].stat().st_mtime_ns == mtime
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != _mn("train", root, tmp_path).fingerprint()


def test_train_split_shuffles_point_order_per_epoch(shared_dir: Path, tmp_path: Path):
    train = _mn("train", shared_dir / "fixtures", tmp_path, seed=3)
    first = train[0]["points"]
    assert np.array_equal(first, train[0]["points"])
    train.set_epoch(1)
    second = train[0]["points"]
    assert not np.array_equal(first, second)
    assert np.allclose(np.sort(first, axis=0), np.sort(second, axis=0))


def test_generated_text_layout_subset_relabels_present_classes(tmp_path: Path):
    root = tmp_path / "ModelNet" / "modelnet40_normal_resampled"
    write_modelnet_text(root, {"bed": (2, 1), "chair": (1, 1), "night_stand": (1, 0)})
    train = _mn("train", tmp_path / "ModelNet", tmp_path / "cache")
    assert train.class_names == ("bed", "chair", "night_stand")
    assert sorted(train.labels.tolist()) == [0, 0, 1, 2]
    test = _mn("test", tmp_path / "ModelNet", tmp_path / "cache")
    assert test.class_names == train.class_names  # same label space for both splits


def test_listed_file_missing_in_present_class_is_data_error(tmp_path: Path):
    root = tmp_path / "mn"
    lists = write_modelnet_text(root, {"bed": (1, 1)}, n=8192)
    (root / "bed" / f"{lists['train'][0]}.txt").unlink()
    with pytest.raises(DataError, match=f"{lists['train'][0]}.txt"):
        _mn("train", root, tmp_path / "cache")


def test_unknown_class_in_list_is_data_error(tmp_path: Path):
    root = tmp_path / "mn"
    write_modelnet_text(root, {"bed": (1, 1)}, n=8192)
    with (root / "modelnet40_train.txt").open("a") as f:
        f.write("spaceship_0001\n")
    with pytest.raises(DataError, match="spaceship"):
        _mn("train", root, tmp_path / "cache")


@pytest.mark.parametrize(("bad", "error"), [("nan", CorruptFileError), ("small", DataError)])
def test_bad_text_shape_names_the_file(tmp_path: Path, bad: str, error: type):
    root = tmp_path / "mn"
    lists = write_modelnet_text(root, {"bed": (1, 1)}, n=8192)
    path = root / "bed" / f"{lists['test'][0]}.txt"
    lines = path.read_text().splitlines()
    if bad == "nan":
        lines[5] = "nan,0.1,0.2,0,0,1"
    else:
        lines = lines[:100]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(error, match=path.name) as exc:
        _mn("test", root, tmp_path / "cache")
    assert exc.value.exit_code == (4 if bad == "nan" else 2)
    assert not list((tmp_path / "cache" / "processed").glob("*"))  # nothing half-written


def test_dat_pickles_need_trust_and_convert_once(tmp_path: Path):
    root = tmp_path / "mn"
    write_modelnet_dat(root, {"train": [0, 5, 5], "test": [5, 0]})
    with pytest.raises(UnsafeFileError, match="--trust-pickle") as exc:
        _mn("train", root, tmp_path / "cache")
    assert "trust-pickle" in (exc.value.hint or "")
    train = _mn("train", root, tmp_path / "cache", trust_pickle=True)
    assert train.class_names == ("airplane", "bottle")
    assert train.labels.tolist() == [0, 1, 1]
    assert train[1]["points"].shape == (8192, 3)
    with (root / "modelnet40_train_8192pts_fps.dat").open("wb") as f:
        pickle.dump({"not": "a list"}, f)
    with pytest.raises(CorruptFileError, match=r"modelnet40_train_8192pts_fps\.dat"):
        _mn("train", root, tmp_path / "cache2", trust_pickle=True)


def test_h5_2048_release(tmp_path: Path):
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    write_modelnet_h5(root, {"train": [3, 0, 3, 39], "test": [0, 39, 3]})
    train = _mn("train", tmp_path, tmp_path / "cache")
    assert train.class_names == (MODELNET40_CLASSES[0], MODELNET40_CLASSES[3], "xbox")
    assert train.labels.tolist() == [1, 0, 1, 2]
    pts = train[0]["points"]
    assert pts.shape == (2048, 3)
    assert abs(np.linalg.norm(pts, axis=1).max() - 1) < 1e-5
    with pytest.raises(DataError, match="--points"):
        build_dataset("modelnet40", "train", data_dir=root, cache_root=tmp_path, points=4096)


def test_h5_bad_keys_and_labels(tmp_path: Path):
    root = tmp_path / "h5"
    write_modelnet_h5(root, {"train": [1, 2], "test": [1, 2]})
    with h5py.File(root / "ply_data_train0.h5", "r+") as f:
        f["label"][0] = 40
    with pytest.raises(CorruptFileError, match=r"ply_data_train0\.h5.*40"):
        _mn("train", root, tmp_path)
    with h5py.File(root / "ply_data_test0.h5", "r+") as f:
        del f["data"]
        f["points"] = np.zeros((1, 2048, 3), np.float32)
    with pytest.raises(CorruptFileError, match=r"ply_data_test0\.h5.*'data'"):
        _mn("test", root, tmp_path)


def test_cache_lookup_and_missing_asset(tmp_path: Path):
    with pytest.raises(AssetNotCachedError) as exc:
        _mn("train", None, tmp_path)
    assert exc.value.exit_code == 3 and "pointpeft download modelnet40" in exc.value.hint
    nested = tmp_path / "datasets" / "modelnet40" / "x" / "h5"
    write_modelnet_h5(nested, {"train": [2], "test": [2]})
    assert _mn("train", None, tmp_path).class_names == ("bed",)
    with pytest.raises(DataError, match="nowhere"):
        _mn("train", tmp_path / "nowhere", tmp_path)


def test_process_text_worker_processes_match_in_process(tmp_path: Path):
    from pointpeft_cli.data import modelnet40_raw as raw

    root = tmp_path / "mn"
    write_modelnet_text(root, {"bed": (3, 0), "sofa": (2, 0)}, n=300)
    entries = raw.text_entries(root, "train", MODELNET40_CLASSES)
    raw.process_text(entries, tmp_path / "a.h5", npoints=256, chunk=2, workers=1)
    raw.process_text(entries, tmp_path / "b.h5", npoints=256, chunk=2, workers=2)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert np.array_equal(a["points"][()], b["points"][()])
        assert a["label"][()].tolist() == [2, 2, 2, 30, 30]
    entries[3].path.write_text("1,2,3,0,0,1\n" * 10)  # valid rows, but too few of them
    with pytest.raises(DataError, match=re.escape(entries[3].path.name)) as exc:
        raw.process_text(entries, tmp_path / "c.h5", npoints=256, chunk=2, workers=2)
    assert exc.value.hint  # the hint survives the worker process
    assert not (tmp_path / "c.h5").exists() and not list(tmp_path.glob("*.incomplete"))
