"""ScanObjectNN variants from h5 files in the official layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from test_data_factories import write_scan_h5

from pointpeft_cli.data.factory import build_dataset
from pointpeft_cli.data.scanobjectnn import VARIANTS, split_file
from pointpeft_cli.errors import AssetNotCachedError, CorruptFileError, DataError
from pointpeft_cli.tasks import SCANOBJECTNN_CLASSES


def _scan(task, split, data_dir, cache, points=2048):
    return build_dataset(task, split, data_dir=data_dir, cache_root=cache, points=points)


def _tree(root: Path) -> dict[str, np.ndarray]:
    written = {}
    for i, task in enumerate(VARIANTS):
        for split in ("train", "test"):
            folder, name = split_file(task, split)
            written[f"{task}/{split}"] = write_scan_h5(root / folder / name, [i, 14, 3 + i], seed=i)
    return written


@pytest.mark.parametrize("task", list(VARIANTS))
def test_variants_read_their_own_files_raw(tmp_path: Path, task: str):
    written = _tree(tmp_path / "h5_files")
    ds = _scan(task, "test", tmp_path, tmp_path / "cache")
    assert ds.class_names == SCANOBJECTNN_CLASSES and SCANOBJECTNN_CLASSES[14] == "toilet"
    i = list(VARIANTS).index(task)
    assert ds.labels.tolist() == [i, 14, 3 + i]
    item = ds[1]
    assert item["points"].shape == (2048, 3) and item["label"] == 14
    # no normalisation, and the test split keeps the file's point order
    assert np.array_equal(item["points"], written[f"{task}/test"][1])


def test_train_split_is_shuffled_but_same_points(tmp_path: Path):
    written = _tree(tmp_path)
    ds = _scan("scanobjectnn-hardest", "train", tmp_path, tmp_path / "c")
    pts = ds[0]["points"]
    src = written["scanobjectnn-hardest/train"][0]
    assert not np.array_equal(pts, src)
    assert np.array_equal(np.sort(pts, axis=0), np.sort(src, axis=0))


def test_bad_files(tmp_path: Path):
    folder, name = split_file("scanobjectnn-objbg", "train")
    path = tmp_path / folder / name
    write_scan_h5(path, [0, 15])
    with pytest.raises(CorruptFileError, match=f"{name}.*15"):
        _scan("scanobjectnn-objbg", "train", tmp_path, tmp_path)
    write_scan_h5(path, [0, 1])
    with h5py.File(path, "r+") as f:
        f["data"][0, 7, 1] = np.inf
    with pytest.raises(CorruptFileError, match="NaN or inf"):
        _scan("scanobjectnn-objbg", "train", tmp_path, tmp_path)
    write_scan_h5(path, [0, 1])
    with h5py.File(path, "r+") as f:
        del f["mask"]
        f["mask"] = np.zeros((2, 100))
    with pytest.raises(CorruptFileError, match="'mask'"):
        _scan("scanobjectnn-objbg", "train", tmp_path, tmp_path)
    write_scan_h5(path, [0, 1], n=512)
    with pytest.raises(DataError, match="512 points"):
        _scan("scanobjectnn-objbg", "train", tmp_path, tmp_path)
    with pytest.raises(DataError, match=r"test_objectdataset\.h5"):
        _scan("scanobjectnn-objbg", "test", tmp_path, tmp_path)


def test_cache_lookup(tmp_path: Path):
    with pytest.raises(AssetNotCachedError, match="scanobjectnn"):
        _scan("scanobjectnn-objonly", "test", None, tmp_path)
    _tree(tmp_path / "datasets" / "scanobjectnn" / "h5_files")
    assert len(_scan("scanobjectnn-objonly", "test", None, tmp_path)) == 3
