"""Unlabelled clouds for pre-training: the procedural stream, a folder, ModelNet40, ShapeNet-55.

Every source yields items `{"points": float32 [points, 3], "index": int}`, normalised like the
fine-tuning data (`pc_normalize`). File sources draw a fresh random subset of `points` points
per item and epoch from `default_rng([seed, epoch, index])` (upstream's ShapeNet loader takes a
random permutation), so an epoch's data depends only on (seed, epoch): resume stays exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pointpeft_cli.data.base import pc_normalize
from pointpeft_cli.data.io import POINT_SUFFIXES, read_cloud
from pointpeft_cli.errors import AssetNotCachedError, DataError, UsageError

SOURCES = ("shapes", "folder", "modelnet40", "shapenet55")
SHAPENET_LIST = Path("ShapeNet-55") / "train.txt"
SHAPENET_PC = "shapenet_pc"


def random_subset(cloud: np.ndarray, points: int, rng: np.random.Generator) -> np.ndarray:
    """`points` rows of `cloud[:, :3]` without replacement (with replacement if it is smaller)."""
    xyz = np.asarray(cloud[:, :3], dtype=np.float32)
    n = len(xyz)
    idx = rng.permutation(n)[:points] if n >= points else rng.integers(0, n, points)
    return pc_normalize(xyz[idx])


class CloudFiles(Dataset):
    """Unlabelled point files (any of `.npy/.txt/.xyz/.ply`), read lazily."""

    def __init__(self, files: list[Path], points: int, seed: int = 0) -> None:
        if not files:
            raise DataError("no point files to pre-train on", hint="check --data-dir")
        self.files, self.points, self.seed, self.epoch = list(files), int(points), int(seed), 0

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        cloud = read_cloud(path)
        if cloud.ndim != 2 or cloud.shape[1] < 3 or len(cloud) == 0:
            raise DataError(f"{path}: expected an [N, 3+] point array, got {cloud.shape}")
        if not np.isfinite(cloud[:, :3]).all():
            raise DataError(f"{path}: holds NaN or Inf coordinates", hint="clean or remove it")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return {"points": random_subset(cloud, self.points, rng), "index": int(index)}


class Unlabelled(Dataset):
    """A labelled dataset with its labels dropped and a per-epoch random `points` subset."""

    def __init__(self, base: Dataset, points: int, seed: int = 0) -> None:
        self.base, self.points, self.seed, self.epoch = base, int(points), int(seed), 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        cloud = np.asarray(self.base[index]["points"])
        return {"points": random_subset(cloud, self.points, rng), "index": int(index)}


def folder_files(root: Path) -> list[Path]:
    """Every point file under `root`, recursively, in sorted order."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder", hint="pass a folder of point files")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in POINT_SUFFIXES)
    if not files:
        raise DataError(
            f"{root}: no point files found", hint=f"add {'/'.join(POINT_SUFFIXES)} files"
        )
    return files


def shapenet_files(root: Path) -> list[Path]:
    """The ShapeNet-55 training clouds listed in `ShapeNet-55/train.txt` (formats.md §3.6)."""
    listing = next((p for p in (root / SHAPENET_LIST, root.parent / SHAPENET_LIST) if p.is_file()),
                   None)  # fmt: skip
    pc_dir = root / SHAPENET_PC
    if listing is None or not pc_dir.is_dir():
        raise DataError(
            f"{root} is not a ShapeNet-55 folder (needs {SHAPENET_PC}/ and {SHAPENET_LIST})",
            hint="pass the ShapeNet55-34 folder of the Point-BERT release",
        )
    names = [n.strip() for n in listing.read_text(encoding="utf-8").splitlines() if n.strip()]
    files = [pc_dir / n for n in names]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise DataError(f"{absent[0]} is listed in {listing} but missing ({len(absent)} files)")
    return files


def build_source(
    source: str,
    *,
    points: int,
    seed: int,
    samples_per_epoch: int,
    data_dir: Path | None,
    cache_root: Path,
) -> Dataset:
    """The pre-training dataset of `source` (one of `SOURCES`).

    Raises:
        UsageError: unknown source, or a file source without `--data-dir` where one is needed.
        DataError / AssetNotCachedError: the data cannot be found or read.
    """
    if source == "shapes":
        from pointpeft_cli.data.shapes import ShapesPretrainStream

        return ShapesPretrainStream(seed=seed, points=points, epoch_size=samples_per_epoch)
    if source == "folder":
        if data_dir is None:
            raise UsageError("pre-training on a folder needs --data-dir DIR")
        return CloudFiles(folder_files(Path(data_dir)), points, seed)
    if source == "shapenet55":
        if data_dir is None:
            raise AssetNotCachedError(
                "ShapeNet-55 is not in the asset registry",
                hint="download it from the Point-BERT release and pass --data-dir ShapeNet55-34",
            )
        return CloudFiles(shapenet_files(Path(data_dir)), points, seed)
    if source == "modelnet40":
        from pointpeft_cli.data.factory import build_dataset

        base = build_dataset(
            "modelnet40", "train", data_dir=data_dir, cache_root=cache_root, points=points
        )
        return Unlabelled(base, points, seed)
    raise UsageError(f"unknown pre-training source {source!r}", hint=f"use {', '.join(SOURCES)}")


def collate_points(items: list[dict]) -> torch.Tensor:
    """Stack items into a `[B, points, 3]` float tensor."""
    return torch.from_numpy(np.stack([it["points"] for it in items]))


def describe_source(ds: Dataset) -> dict:
    """JSON-ready facts about a source (recorded in run.json)."""
    size = getattr(ds, "epoch_size", None) or len(ds)  # type: ignore[arg-type]
    info = {"type": type(ds).__name__, "samples_per_epoch": int(size)}
    files = getattr(ds, "files", None)
    if files is not None:
        info["num_files"] = len(files)
    return info
