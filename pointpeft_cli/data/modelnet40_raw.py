"""One-time conversion of ModelNet40 releases to the processed h5 cache (FPS-8192 xyz).

Processed file: ``points`` float32 ``[S, 8192, 3]`` (raw xyz in FPS order from index 0),
``label`` int64 ``[S]`` (index in ``modelnet40_shape_names.txt``), ``ids`` (shape ids).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from pointpeft_cli import errors
from pointpeft_cli.data.base import check_cloud, check_labels
from pointpeft_cli.data.fastfps import blocked_farthest_point_sample
from pointpeft_cli.data.io import atomic_h5, read_text_points
from pointpeft_cli.errors import CorruptFileError, DataError, PointPeftError, UnsafeFileError

FPS_POINTS = 8192
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Entry:
    """One shape of a split list."""

    shape_id: str
    label: int  # index into the shape-names file
    path: Path


def read_names(path: Path) -> list[str]:
    """Non-empty stripped lines of a list file."""
    try:
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file", hint="is this a ModelNet40 folder?") from exc


def class_of(shape_id: str) -> str:
    """Class of a shape id: everything before the last ``_`` (``night_stand_0001``)."""
    return shape_id.rsplit("_", 1)[0]


def text_entries(root: Path, split: str, names: Sequence[str]) -> list[Entry]:
    """Entries of ``modelnet40_<split>.txt`` whose class folder exists (subset data dirs)."""
    list_file = root / f"modelnet40_{split}.txt"
    index = {n: i for i, n in enumerate(names)}
    entries = []
    for shape_id in read_names(list_file):
        cls = class_of(shape_id)
        if cls not in index:
            raise DataError(
                f"{list_file}: {shape_id!r} has class {cls!r}, which is not in "
                "modelnet40_shape_names.txt",
                hint="fix the list or the shape-names file",
            )
        folder = root / cls
        if not folder.is_dir():
            continue  # a --data-dir may hold a subset of the classes
        path = folder / f"{shape_id}.txt"
        if not path.is_file():
            raise DataError(f"{path}: listed in {list_file.name} but missing", hint="re-extract")
        entries.append(Entry(shape_id, index[cls], path))
    return entries


def _fps_group(clouds: list[np.ndarray], npoints: int) -> list[np.ndarray]:
    """FPS ``npoints`` of each cloud, batched over clouds of equal size."""
    out: list[np.ndarray | None] = [None] * len(clouds)
    sizes = sorted({len(c) for c in clouds})
    for size in sizes:
        rows = [i for i, c in enumerate(clouds) if len(c) == size]
        batch = torch.from_numpy(np.stack([clouds[i] for i in rows]))
        idx = blocked_farthest_point_sample(batch, npoints)
        picked = torch.gather(batch, 1, idx.unsqueeze(-1).expand(-1, -1, 3)).numpy()
        for j, i in enumerate(rows):
            out[i] = picked[j]
    return out  # type: ignore[return-value]


def _load_chunk(paths: list[Path], npoints: int) -> np.ndarray | tuple[str, str, str | None]:
    """Parse and FPS one chunk (runs in a worker process); errors come back as data."""
    try:
        clouds = [check_cloud(read_text_points(p), p, npoints) for p in paths]
        return np.stack(_fps_group(clouds, npoints))
    except PointPeftError as exc:  # exception pickling would drop the hint
        return (type(exc).__name__, exc.message, exc.hint)


def _chunks(entries: Sequence[Entry], npoints: int, chunk: int, workers: int):
    """Processed chunks in order, from ``workers`` processes (or in-process for 1)."""
    parts = [[e.path for e in entries[i : i + chunk]] for i in range(0, len(entries), chunk)]
    if workers <= 1 or len(parts) < 2:
        yield from (_load_chunk(p, npoints) for p in parts)
        return
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch threads exist
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=torch.set_num_threads,
                             initargs=(1,)) as pool:  # fmt: skip
        yield from pool.map(_load_chunk, parts, [npoints] * len(parts))


def process_text(
    entries: Sequence[Entry],
    out: Path,
    *,
    npoints: int = FPS_POINTS,
    chunk: int = 64,
    workers: int | None = None,
    progress: Progress | None = None,
) -> None:
    """Parse text shapes, FPS each to ``npoints`` (batched), write the processed h5 atomically.

    Args:
        entries: the shapes, in list order.
        out: processed h5 path (written to a temp name, then renamed).
        npoints: FPS target per shape.
        chunk: shapes per batched FPS call.
        workers: processes (default: up to 2 when there is enough work); each FPS loop is
            single-threaded, so processes are how it uses more than one core.
        progress: called as ``progress(done, total)`` after each chunk.
    """
    if not entries:
        raise DataError(f"no shapes to process for {out.name}", hint="check the data folder")
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(entries) >= 4 * chunk else 1
    with atomic_h5(out) as f:
        pts = f.create_dataset("points", (len(entries), npoints, 3), dtype="f4")
        f.create_dataset("label", data=np.array([e.label for e in entries], dtype=np.int64))
        f.create_dataset("ids", data=[e.shape_id.encode() for e in entries])
        done = 0
        for block in _chunks(entries, npoints, chunk, workers):
            if isinstance(block, tuple):
                cls = getattr(errors, block[0], CorruptFileError)
                raise cls(block[1], hint=block[2])
            pts[done : done + len(block)] = block
            done += len(block)
            if progress is not None:
                progress(done, len(entries))


def _unpickle(path: Path, trust_pickle: bool) -> object:
    if not trust_pickle:
        raise UnsafeFileError(
            f"{path}: is a pickle (it can run code when loaded); read only with --trust-pickle",
            hint="pass --trust-pickle if you trust its source, or use the text release",
        )
    try:
        with path.open("rb") as fh:
            return pickle.load(fh)  # explicit user opt-in above
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file", hint="check the data folder") from exc
    except Exception as exc:
        raise CorruptFileError(f"{path}: cannot be unpickled ({exc})", hint="re-download") from exc


def process_dat(
    path: Path, out: Path, num_classes: int, *, trust_pickle: bool, min_points: int
) -> None:
    """Convert a Point-BERT ``modelnet40_<split>_8192pts_fps.dat`` pickle to the processed h5."""
    data = _unpickle(path, trust_pickle)
    ok = isinstance(data, (list, tuple)) and len(data) == 2
    if not ok or len(data[0]) != len(data[1]) or not len(data[0]):
        raise CorruptFileError(
            f"{path}: expected a pickled [list_of_points, list_of_labels] of equal length",
            hint="this is not a Point-BERT processed ModelNet40 file",
        )
    clouds = [check_cloud(np.asarray(p), path, min_points) for p in data[0]]
    if len({len(c) for c in clouds}) != 1:
        raise CorruptFileError(f"{path}: clouds differ in size", hint="re-download the file")
    try:
        flat = np.array([np.asarray(lb).reshape(-1)[0] for lb in data[1]])
    except (IndexError, ValueError, TypeError) as exc:
        raise CorruptFileError(f"{path}: unreadable labels ({exc})", hint="re-download") from exc
    labels = check_labels(flat, num_classes, path)
    with atomic_h5(out) as f:
        f.create_dataset("points", data=np.stack(clouds))
        f.create_dataset("label", data=labels)


def processed_labels(path: Path) -> np.ndarray:
    """The ``label`` column of a processed h5 file."""
    with h5py.File(path, "r") as f:
        return f["label"][()].astype(np.int64)
