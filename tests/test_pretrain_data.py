"""Pre-training sources: the shapes stream, folders, ShapeNet-55 lists, ModelNet40 files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pointpeft_cli.engine.pretrain_data import build_source, collate_points
from pointpeft_cli.errors import AssetNotCachedError, DataError, UsageError


def _source(name: str, tmp_path: Path, data_dir: Path | None, points: int = 64):
    return build_source(name, points=points, seed=0, samples_per_epoch=8, data_dir=data_dir,
                        cache_root=tmp_path / "cache")  # fmt: skip


def _check_item(item: dict, points: int) -> None:
    pts = item["points"]
    assert pts.shape == (points, 3) and pts.dtype == np.float32
    assert np.isfinite(pts).all()
    assert abs(float(np.linalg.norm(pts, axis=1).max()) - 1.0) < 1e-4  # pc_normalize
    assert np.abs(pts.mean(axis=0)).max() < 1e-4


def test_shapes_stream_yields_fresh_normalised_clouds_each_epoch(tmp_path: Path) -> None:
    ds = _source("shapes", tmp_path, None)
    first = list(ds)
    assert len(first) == 8
    _check_item(first[0], 64)
    ds.set_epoch(1)
    second = list(ds)
    assert not np.allclose(first[0]["points"], second[0]["points"])
    ds.set_epoch(0)
    assert np.array_equal(list(ds)[3]["points"], first[3]["points"])


def test_folder_reads_every_point_file_recursively(tmp_path: Path) -> None:
    root = tmp_path / "clouds"
    (root / "a" / "b").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(root / "one.npy", rng.normal(size=(500, 3)).astype(np.float32))
    np.savetxt(root / "a" / "two.txt", rng.normal(size=(300, 6)), delimiter=",")
    np.savetxt(root / "a" / "b" / "three.xyz", rng.normal(size=(20, 3)))  # fewer than points
    (root / "notes.md").write_text("not a cloud")
    ds = _source("folder", tmp_path, root)
    assert [p.name for p in ds.files] == ["three.xyz", "two.txt", "one.npy"]
    for i in range(len(ds)):
        _check_item(ds[i], 64)
    again = ds[1]["points"]
    ds.set_epoch(1)
    assert not np.array_equal(ds[1]["points"], again)  # a new random subset per epoch
    assert collate_points([ds[0], ds[1]]).shape == (2, 64, 3)


def test_folder_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        _source("folder", tmp_path, None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no point files"):
        _source("folder", tmp_path, tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    np.save(tmp_path / "bad" / "x.npy", np.full((100, 3), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match=r"x\.npy"):
        _source("folder", tmp_path, tmp_path / "bad")[0]


def test_shapenet55_uses_the_train_list(tmp_path: Path) -> None:
    root = tmp_path / "ShapeNet55-34"
    (root / "shapenet_pc").mkdir(parents=True)
    (root / "ShapeNet-55").mkdir()
    rng = np.random.default_rng(1)
    for name in ("02691156-a.npy", "02691156-b.npy", "03001627-c.npy"):
        np.save(root / "shapenet_pc" / name, rng.normal(size=(8192, 3)).astype(np.float32))
    (root / "ShapeNet-55" / "train.txt").write_text("02691156-a.npy\n03001627-c.npy\n")
    ds = _source("shapenet55", tmp_path, root)
    assert [p.name for p in ds.files] == ["02691156-a.npy", "03001627-c.npy"]
    _check_item(ds[1], 64)
    (root / "ShapeNet-55" / "train.txt").write_text("02691156-a.npy\nmissing.npy\n")
    with pytest.raises(DataError, match="missing"):
        _source("shapenet55", tmp_path, root)
    with pytest.raises(AssetNotCachedError):
        _source("shapenet55", tmp_path, None)


def test_modelnet40_files_are_used_without_labels(tmp_path: Path, shared_dir: Path) -> None:
    root = shared_dir / "fixtures" / "modelnet40_normal_resampled"
    ds = _source("modelnet40", tmp_path, root, points=256)
    assert len(ds) >= 2
    item = ds[0]
    assert set(item) == {"points", "index"}
    _check_item(item, 256)


def test_unknown_source_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="scannet"):
        _source("scannet", tmp_path, None)
