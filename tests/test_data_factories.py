"""Writers for small data sets in the exact upstream layouts (used by tests/test_data_*.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np

from pointpeft_cli.tasks import MODELNET40_CLASSES


def blob(rng: np.random.Generator, n: int, scale=(1.0, 0.6, 0.3), shift=0.0) -> np.ndarray:
    """An anisotropic Gaussian cloud ``[n, 3]`` float32, off-centre by ``shift``."""
    return (rng.standard_normal((n, 3)) * np.asarray(scale) + shift).astype(np.float32)


def write_modelnet_text(root: Path, shapes: dict[str, tuple[int, int]], n: int = 8200, seed=0):
    """``modelnet40_normal_resampled`` layout: official names, lists, ``x,y,z,nx,ny,nz`` files.

    Args:
        shapes: class -> (train count, test count).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    lists = {"train": [], "test": []}
    k = 1
    for cls, counts in shapes.items():
        (root / cls).mkdir(exist_ok=True)
        for split, count in zip(("train", "test"), counts, strict=True):
            for _ in range(count):
                sid = f"{cls}_{k:04d}"
                k += 1
                xyz = blob(rng, n, shift=3.0)
                normals = rng.standard_normal((n, 3))
                rows = np.concatenate([xyz, normals / np.linalg.norm(normals, axis=1)[:, None]], 1)
                np.savetxt(root / cls / f"{sid}.txt", rows, fmt="%.6f", delimiter=",")
                lists[split].append(sid)
    for split, ids in lists.items():
        (root / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
    return lists


def write_modelnet_dat(root: Path, labels: dict[str, list[int]], seed=0) -> None:
    """Point-BERT ``modelnet40_<split>_8192pts_fps.dat`` pickles + shape names."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    for split, labs in labels.items():
        pts = [np.concatenate([blob(rng, 8192), blob(rng, 8192)], 1) for _ in labs]
        lab = [np.array([c], dtype=np.int32) for c in labs]
        with (root / f"modelnet40_{split}_8192pts_fps.dat").open("wb") as f:
            pickle.dump([pts, lab], f)
        (root / f"modelnet40_{split}.txt").write_text("")


def write_modelnet_h5(root: Path, labels: dict[str, list[int]], n: int = 2048, seed=0) -> None:
    """``modelnet40_ply_hdf5_2048`` layout: ply_data_<split><i>.h5, lists, shape_names.txt."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    for split, labs in labels.items():
        half = (len(labs) + 1) // 2
        names = []
        for i, part in enumerate(p for p in (labs[:half], labs[half:]) if p):
            name = f"ply_data_{split}{i}.h5"
            with h5py.File(root / name, "w") as f:
                f["data"] = np.stack([blob(rng, n) for _ in part]).astype("<f4")
                f["label"] = np.array(part, dtype="u1").reshape(-1, 1)
            names.append(f"data/modelnet40_ply_hdf5_2048/{name}")
        (root / f"{split}_files.txt").write_text("\n".join(names) + "\n")


def write_scan_h5(path: Path, labels: list[int], n: int = 2048, seed=0, mask=True) -> np.ndarray:
    """One ScanObjectNN h5 file (``data``, ``label``, ``mask``); returns the points."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([blob(rng, n, shift=2.0) for _ in labels]).astype("<f4")
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = np.array(labels, dtype=np.int64)
        if mask:
            f["mask"] = np.zeros((len(labels), n), dtype=np.int32)
    return data
