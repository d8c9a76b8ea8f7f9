"""ScanObjectNN OBJ-BG, OBJ-ONLY and PB-T50-RS from the official h5 files (formats.md §3.5).

Keys ``data`` float32 ``[S, 2048, 3]``, ``label`` ``[S]`` (or ``[S, 1]``) in the 15-name order of
``tasks.SCANOBJECTNN_CLASSES``, optional ``mask`` ``[S, 2048]`` (read for validation, unused).
Points are returned raw (no normalisation), as upstream; the train split shuffles point order.
"""

from __future__ import annotations

from pathlib import Path

import h5py

from pointpeft_cli.data.base import PointDataset, check_labels
from pointpeft_cli.data.fingerprint import digest, files_digest
from pointpeft_cli.data.io import (
    cached_dataset_dirs,
    check_point_array,
    find_root,
    not_cached,
    read_h5_arrays,
)
from pointpeft_cli.errors import CorruptFileError, DataError
from pointpeft_cli.tasks import SCANOBJECTNN_CLASSES

#: task -> (sub-folder, file stem after ``training_``/``test_``)
VARIANTS = {
    "scanobjectnn-objbg": ("main_split", "objectdataset"),
    "scanobjectnn-objonly": ("main_split_nobg", "objectdataset"),
    "scanobjectnn-hardest": ("main_split", "objectdataset_augmentedrot_scale75"),
}


def split_file(task: str, split: str) -> tuple[str, str]:
    """``(folder, file name)`` of a split, e.g. ``("main_split", "test_objectdataset.h5")``."""
    folder, stem = VARIANTS[task]
    return folder, f"{'training' if split == 'train' else 'test'}_{stem}.h5"


def locate(task: str, split: str, data_dir: Path | None, cache_root: Path) -> Path:
    """The h5 file for ``task``/``split`` under ``data_dir`` or the ``scanobjectnn`` asset."""
    folder, name = split_file(task, split)
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(f"{data_dir}: no such folder", hint="check --data-dir")
        root = find_root(Path(data_dir), folder)
        if root is None:
            raise DataError(
                f"{data_dir}: no {folder}/ folder found",
                hint="point --data-dir at the extracted ScanObjectNN h5_files folder",
            )
        path = root / folder / name
        if not path.is_file():
            raise DataError(f"{path}: no such file", hint=f"{task} needs {folder}/{name}")
        return path
    for base in cached_dataset_dirs(cache_root, "scanobjectnn"):
        root = find_root(base, folder)
        if root is not None and (root / folder / name).is_file():
            return root / folder / name
    raise not_cached("scanobjectnn", f"ScanObjectNN ({folder}/{name})")


def _validate_mask(path: Path, shape: tuple[int, int]) -> None:
    with h5py.File(path, "r") as f:
        if "mask" in f and tuple(f["mask"].shape) != shape:
            raise CorruptFileError(
                f"{path}: 'mask' has shape {list(f['mask'].shape)}, expected {list(shape)}",
                hint="the file is not in the official ScanObjectNN layout",
            )


def load_scanobjectnn(
    task: str,
    split: str,
    *,
    data_dir: Path | None,
    cache_root: Path,
    min_points: int = 1,
    seed: int = 0,
) -> PointDataset:
    """One ScanObjectNN variant's ``split`` as raw 2048-point clouds with 15-class labels."""
    path = locate(task, split, data_dir, cache_root)
    arrays = read_h5_arrays(path, {"data": 3, "label": 1})
    points = check_point_array(arrays["data"], path, min_points)
    if len(points) != len(arrays["label"]):
        raise CorruptFileError(f"{path}: 'data' and 'label' differ in length", hint="re-extract")
    _validate_mask(path, points.shape[:2])
    labels = check_labels(arrays["label"], len(SCANOBJECTNN_CLASSES), path)
    fp = digest(task, files_digest([path], path.parent.parent, kind="scanobjectnn"))
    return PointDataset(points, labels, SCANOBJECTNN_CLASSES, split, fp, normalize=False, seed=seed)
