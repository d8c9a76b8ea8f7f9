"""ModelNet40 from any upstream release (formats.md §3.1, §3.2, §3.4).

* normal-resampled text release (``modelnet40_shape_names.txt``, lists, ``<class>/<id>.txt``):
  FPS-8192 once (vectorised torch), cached as processed h5;
* Point-BERT ``modelnet40_<split>_8192pts_fps.dat`` pickles: only with ``trust_pickle``,
  converted once; preferred over the text files when trusted, since it skips the FPS;
* the h5-2048 release (``shape_names.txt``, ``ply_data_<split><i>.h5``).

The class list comes from the shape-names file; only classes that have samples (in either split)
are used, in that order, so a data folder holding a subset of classes gets labels 0..k-1.
Items are ``pc_normalize``d xyz; the train split shuffles the point order per item.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pointpeft_cli.data import modelnet40_raw as raw
from pointpeft_cli.data.base import PointDataset, check_labels
from pointpeft_cli.data.fingerprint import digest, files_digest
from pointpeft_cli.data.io import (
    H5Rows,
    cached_dataset_dirs,
    check_point_array,
    find_root,
    not_cached,
    processed_path,
    read_h5_arrays,
)
from pointpeft_cli.errors import CorruptFileError, DataError

TEXT_MARKER = "modelnet40_shape_names.txt"
H5_MARKER = "shape_names.txt"
SPLITS = ("train", "test")


def locate(data_dir: Path | None, cache_root: Path, asset: str = "modelnet40") -> tuple[Path, str]:
    """The ModelNet40 root and its kind (``"text"`` or ``"h5"``) under ``data_dir`` or the cache."""
    bases = [Path(data_dir)] if data_dir is not None else cached_dataset_dirs(cache_root, asset)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"{data_dir}: no such folder", hint="check --data-dir")
    for base in bases:
        for marker, kind in ((TEXT_MARKER, "text"), (H5_MARKER, "h5")):
            root = find_root(base, marker)
            if root is not None:
                return root, kind
    if data_dir is not None:
        raise DataError(
            f"{data_dir}: no {TEXT_MARKER} or {H5_MARKER} found",
            hint="point --data-dir at the extracted modelnet40_normal_resampled or "
            "modelnet40_ply_hdf5_2048 folder",
        )
    raise not_cached(asset, "ModelNet40")


def _dat_path(root: Path, split: str) -> Path:
    return root / f"modelnet40_{split}_{raw.FPS_POINTS}pts_fps.dat"


def _source(root: Path, split: str, names: list[str], trust_pickle: bool):
    """``("dat", path)`` or ``("text", entries)`` for one split of the text/.dat release."""
    entries = raw.text_entries(root, split, names)
    dat = _dat_path(root, split)
    if dat.is_file() and (trust_pickle or not entries):
        return "dat", dat
    if not entries:
        raise DataError(
            f"{root}: no shapes of the {split} list are present",
            hint="extract the class folders (or the .dat files) into this folder",
        )
    return "text", entries


def _processed(root, split, source, names, cache_root, progress, trust_pickle):
    """Processed h5 path and fingerprint for one split, converting it on first use."""
    kind, src = source
    if kind == "dat":
        fp = files_digest([src], root, kind="dat")
        out = processed_path(cache_root, f"modelnet40-dat-{split}", fp)
        if not out.exists():
            raw.process_dat(src, out, len(names), trust_pickle=trust_pickle, min_points=1)
        return out, fp
    fp = files_digest([e.path for e in src], root, kind="text", fps=raw.FPS_POINTS)
    out = processed_path(cache_root, f"modelnet40-text-{split}", fp)
    if not out.exists():
        raw.process_text(src, out, progress=progress)
    return out, fp


def _from_text(root, split, cache_root, seed, progress, trust_pickle) -> PointDataset:
    names = raw.read_names(root / TEXT_MARKER)
    sources = {s: _source(root, s, names, trust_pickle) for s in SPLITS}
    args = (names, cache_root, progress, trust_pickle)
    done = {split: _processed(root, split, sources[split], *args)}
    seen = []
    for s, (kind, src) in sources.items():
        if kind == "text":
            seen.append(np.array([e.label for e in src], dtype=np.int64))
        else:  # the labels live inside the pickle, so the other split is converted too
            if s not in done:
                done[s] = _processed(root, s, (kind, src), *args)
            seen.append(raw.processed_labels(done[s][0]))
    present = np.unique(np.concatenate(seen))
    path, fp = done[split]
    return _dataset(H5Rows(path), raw.processed_labels(path), names, present, split, fp, seed)


def _dataset(points, labels40, names, present, split, fp, seed) -> PointDataset:
    """Remap labels onto the present classes (in shape-names order) and wrap."""
    lut = np.full(len(names), -1, dtype=np.int64)
    lut[present] = np.arange(len(present))
    class_names = [names[c] for c in present]
    return PointDataset(
        points, lut[labels40], class_names, split, digest("modelnet40", fp, class_names),
        normalize=True, seed=seed,
    )  # fmt: skip


def _h5_files(root: Path, split: str) -> list[Path]:
    listing = root / f"{split}_files.txt"
    if listing.is_file():
        files = [root / Path(line).name for line in raw.read_names(listing)]
    else:
        pattern = re.compile(rf"ply_data_{split}(\d+)\.h5$")
        found = [(int(m.group(1)), p) for p in root.iterdir() if (m := pattern.match(p.name))]
        files = [p for _, p in sorted(found)]
    if not files:
        raise DataError(f"{root}: no ply_data_{split}*.h5 files", hint="re-extract the release")
    return files


def _read_h5_split(root: Path, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    pts, labels = [], []
    for path in _h5_files(root, split):
        arrays = read_h5_arrays(path, {"data": 3, "label": 1})
        if len(arrays["data"]) != len(arrays["label"]):
            msg = f"{path}: 'data' and 'label' differ in length"
            raise CorruptFileError(msg, hint="re-download the release")
        pts.append(check_point_array(arrays["data"], path, 1))
        labels.append(check_labels(arrays["label"], num_classes, path))
    return np.concatenate(pts), np.concatenate(labels)


def _from_h5(root: Path, split: str, seed: int) -> PointDataset:
    names = raw.read_names(root / H5_MARKER)
    points, labels = _read_h5_split(root, split, len(names))
    other = "test" if split == "train" else "train"
    _, other_labels = _read_h5_split(root, other, len(names))
    present = np.unique(np.concatenate([labels, other_labels]))
    fp = files_digest(_h5_files(root, split), root, kind="h5")
    return _dataset(points, labels, names, present, split, fp, seed)


def load_modelnet40(
    split: str,
    *,
    data_dir: Path | None,
    cache_root: Path,
    trust_pickle: bool = False,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    asset: str = "modelnet40",
) -> PointDataset:
    """ModelNet40 ``split`` as a :class:`PointDataset` of normalised xyz (8192 or 2048 points).

    Args:
        split: ``"train"`` or ``"test"``.
        data_dir: a folder in an upstream layout, or None for the asset cache.
        cache_root: cache root (processed h5 files go under ``processed/``).
        trust_pickle: allow reading Point-BERT ``.dat`` pickles.
        seed: seeds the per-item point-order shuffle of the train split.
        progress: called as ``progress(done, total)`` while text shapes are processed.
        asset: asset id for the cache lookup.
    """
    root, kind = locate(data_dir, cache_root, asset)
    if kind == "h5":
        return _from_h5(root, split, seed)
    return _from_text(root, split, cache_root, seed, progress, trust_pickle)
