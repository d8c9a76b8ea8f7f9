"""``build_dataset``: the one entry point from a task name to a dataset (cli.md tasks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pointpeft_cli.data.base import PointDataset
from pointpeft_cli.data.sampling import point_all_for
from pointpeft_cli.errors import DataError, UsageError
from pointpeft_cli.tasks import get_task

SPLITS = ("train", "test")


def build_dataset(
    task: str,
    split: str,
    *,
    data_dir: Path | None,
    cache_root: Path,
    points: int,
    trust_pickle: bool = False,
    way: int = 5,
    shot: int = 10,
    fold: int = 0,
    max_samples: int | None = None,
    seed: int = 0,
    shapes_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
):
    """The dataset for ``task``/``split``; items hold at least ``points`` points.

    Args:
        task: a task name from ``tasks.TASKS``.
        split: ``"train"`` or ``"test"``.
        data_dir: upstream-layout folder (``--data-dir``) or None for the asset cache.
        cache_root: cache root (assets under ``datasets/``, processed files under ``processed/``).
        points: points the model sees (``--points``); clouds with fewer raise ``DataError``.
        trust_pickle: allow Point-BERT ``.dat`` / few-shot ``.pkl`` pickles.
        way, shot, fold: few-shot episode (``modelnet40-fewshot``).
        max_samples: deterministic stratified subset size (``--max-*-samples``).
        seed: seeds per-item shuffles and the subset.
        shapes_size: number of ``shapes`` samples in this split (default 2400 / 600).
        progress: ``progress(done, total)`` during one-time preprocessing.

    Returns:
        A :class:`PointDataset` (or ``ShapesDataset``) with ``class_names``, ``split``,
        ``num_points`` and ``fingerprint()``.
    """
    spec = get_task(task)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}", hint="use 'train' or 'test'")
    if points < 1:
        raise UsageError(f"--points must be >= 1, got {points}", hint="use e.g. 1024")
    cache_root = Path(cache_root)
    data_dir = None if data_dir is None else Path(data_dir)
    if spec.name == "shapes":
        from pointpeft_cli.data.shapes import ShapesDataset

        ds = ShapesDataset(split, seed=seed, size=shapes_size, points=point_all_for(points, 10**9))
    elif spec.name == "modelnet40":
        from pointpeft_cli.data.modelnet40 import load_modelnet40

        ds = load_modelnet40(
            split, data_dir=data_dir, cache_root=cache_root, trust_pickle=trust_pickle,
            seed=seed, progress=progress, asset=spec.asset or "modelnet40",
        )  # fmt: skip
    elif spec.name.startswith("scanobjectnn"):
        from pointpeft_cli.data.scanobjectnn import load_scanobjectnn

        ds = load_scanobjectnn(
            spec.name, split, data_dir=data_dir, cache_root=cache_root, min_points=points,
            seed=seed,
        )  # fmt: skip
    elif spec.name == "modelnet40-fewshot":
        from pointpeft_cli.data.modelnet40_fewshot import load_fewshot

        ds = load_fewshot(
            split, way=way, shot=shot, fold=fold, data_dir=data_dir, cache_root=cache_root,
            trust_pickle=trust_pickle, seed=seed,
        )  # fmt: skip
    else:
        from pointpeft_cli.data.folder import load_folder

        ds = load_folder(split, data_dir=data_dir, cache_root=cache_root, points=points, seed=seed)
    _check_points(ds, points, task)
    return ds.subset(max_samples, seed)


def _check_points(ds: PointDataset, points: int, task: str) -> None:
    if ds.num_points < points:
        raise DataError(
            f"{task}: clouds have {ds.num_points} points, fewer than --points {points}",
            hint=f"use --points {ds.num_points} or less",
        )
