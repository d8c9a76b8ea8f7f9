"""The folder task and the PLY reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_factories import blob

from pointpeft_cli.data.factory import build_dataset
from pointpeft_cli.data.io import read_cloud
from pointpeft_cli.data.ply import read_ply
from pointpeft_cli.errors import CorruptFileError, DataError
from pointpeft_cli.models.ops import farthest_point_sample, gather_points


def _ply(path: Path, xyz: np.ndarray, fmt: str, vtype: str = "float") -> None:
    """A PLY with extra vertex properties and a face element, in ``fmt``."""
    n = len(xyz)
    header = (
        f"ply\nformat {fmt} 1.0\ncomment made by a test\nelement vertex {n}\n"
        f"property {vtype} x\nproperty {vtype} y\nproperty uchar red\nproperty {vtype} z\n"
        "element face 2\nproperty list uchar int vertex_indices\nend_header\n"
    )
    np_t = {"float": "f4", "double": "f8", "short": "i2"}[vtype]
    if fmt == "ascii":
        rows = "".join(f"{x} {y} 7 {z}\n" for x, y, z in xyz)
        path.write_bytes(header.encode() + rows.encode() + b"3 0 1 2\n3 1 2 3\n")
        return
    order = "<" if fmt == "binary_little_endian" else ">"
    dt = np.dtype([("x", order + np_t), ("y", order + np_t), ("r", "u1"), ("z", order + np_t)])
    rows = np.zeros(n, dt)
    rows["x"], rows["y"], rows["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    face = bytes([3]) + np.array([0, 1, 2], dtype=order + "i4").tobytes()  # uchar count, ints
    path.write_bytes(header.encode() + rows.tobytes() + face * 2)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("vtype", ["float", "double", "short"])
def test_ply_formats(tmp_path: Path, fmt: str, vtype: str):
    xyz = np.random.default_rng(0).integers(-50, 50, (40, 3)).astype(np.float32)
    path = tmp_path / "c.ply"
    _ply(path, xyz, fmt, vtype)
    assert np.array_equal(read_ply(path), xyz)


def test_ply_errors(tmp_path: Path):
    path = tmp_path / "bad.ply"
    path.write_bytes(b"not a ply")
    with pytest.raises(CorruptFileError, match=r"bad\.ply"):
        read_ply(path)
    _ply(path, np.zeros((10, 3), np.float32), "binary_little_endian")
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"end_header") + 11 + 50])
    with pytest.raises(CorruptFileError, match="truncated"):
        read_ply(path)


def _make_folder(root: Path, rng, n=1500) -> dict[str, list[np.ndarray]]:
    clouds: dict[str, list[np.ndarray]] = {}
    for split in ("train", "test"):
        for cls, shift in (("mug", 0.0), ("box", 5.0)):
            d = root / split / cls
            d.mkdir(parents=True)
            for k, ext in enumerate((".npy", ".txt", ".xyz", ".ply")):
                pts = blob(rng, n + 37 * k, shift=shift)
                clouds.setdefault(f"{split}/{cls}", []).append(pts)
                path = d / f"s{k}{ext}"
                if ext == ".npy":
                    np.save(path, pts)
                elif ext == ".txt":
                    np.savetxt(path, pts, delimiter=",")
                elif ext == ".xyz":
                    np.savetxt(path, np.concatenate([pts, pts], 1))  # extra columns ignored
                else:
                    _ply(path, pts, "binary_little_endian")
    return clouds


def test_folder_task(tmp_path: Path):
    clouds = _make_folder(tmp_path / "d", np.random.default_rng(1))
    kw = {"data_dir": tmp_path / "d", "cache_root": tmp_path / "c", "points": 1024}
    test = build_dataset("folder", "test", **kw)
    assert test.class_names == ("box", "mug")  # sorted
    assert test.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert test.num_points == 1200
    item = test[4]
    assert abs(np.linalg.norm(item["points"], axis=1).max() - 1) < 1e-5
    # the pool is the FPS prefix of the original cloud: test-time FPS equals FPS of the file
    src = torch.from_numpy(clouds["test/mug"][0])[None]
    want = gather_points(src, farthest_point_sample(src, 1024))[0].numpy()
    pooled = test._points[4]
    got = pooled[farthest_point_sample(torch.from_numpy(pooled)[None], 1024)[0].numpy()]
    assert np.allclose(got, want)
    assert read_cloud(tmp_path / "d" / "test" / "mug" / "s1.txt").shape == (1537, 3)


def test_folder_errors(tmp_path: Path):
    kw = {"cache_root": tmp_path / "c", "points": 1024}
    with pytest.raises(DataError, match="train"):
        build_dataset("folder", "train", data_dir=tmp_path, **kw)
    rng = np.random.default_rng(2)
    _make_folder(tmp_path / "d", rng)
    (tmp_path / "d" / "test" / "cat").mkdir()
    np.save(tmp_path / "d" / "test" / "cat" / "a.npy", blob(rng, 2000))
    with pytest.raises(DataError, match="'cat'"):
        build_dataset("folder", "test", data_dir=tmp_path / "d", **kw)
    np.save(tmp_path / "d" / "train" / "box" / "tiny.npy", blob(rng, 100))
    with pytest.raises(DataError, match=r"tiny\.npy.*100 points"):
        build_dataset("folder", "train", data_dir=tmp_path / "d", **kw)
    bad = blob(rng, 2000)
    bad[3, 1] = np.nan
    np.save(tmp_path / "d" / "train" / "box" / "tiny.npy", bad)
    with pytest.raises(CorruptFileError, match=r"tiny\.npy"):
        build_dataset("folder", "train", data_dir=tmp_path / "d", **kw)
    (tmp_path / "d" / "train" / "box" / "tiny.npy").write_text("")
    (tmp_path / "d" / "train" / "box" / "e.txt").write_text("")
    with pytest.raises(CorruptFileError):
        build_dataset("folder", "train", data_dir=tmp_path / "d", **kw)
