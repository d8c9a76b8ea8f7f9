"""Atomic file writes: a temp file in the target directory, fsync, then os.replace."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pointpeft_cli.errors import storage_error


def temp_path_for(path: Path) -> Path:
    """A unique `*.incomplete` sibling of `path` (same filesystem, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.incomplete")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temp path to write; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    tmp = temp_path_for(path)
    made = _missing_parents(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())  # a full disk may only show here (delayed allocation)
        os.chmod(tmp, 0o666 & ~_umask())  # some writers create 0600 files
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        _remove_empty(made)  # a failed write leaves no new empty folders either
        err = storage_error(exc, path) if isinstance(exc, OSError) else None
        if err is None:
            raise
        raise err from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _missing_parents(path: Path) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first."""
    out = []
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        out.append(parent)
        parent = parent.parent
    return out


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Calls `write(tmp_path)` and moves the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Writes `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Writes `obj` as indented, key-sorted JSON to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sort_safetensors_metadata(path: Path) -> None:
    """Rewrites a safetensors header so its metadata keys are sorted, in place.

    The Rust writer stores metadata from a hash map whose order changes from process to process,
    so two runs with identical tensors would give different bytes. The header keeps its length
    (same keys and values, compact JSON), so the tensor data does not move.
    """
    with open(path, "r+b") as fh:
        size = int.from_bytes(fh.read(8), "little")
        raw = fh.read(size)
        header = json.loads(raw)
        meta = header.get("__metadata__")
        if not meta:
            return
        header["__metadata__"] = dict(sorted(meta.items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size:  # never expected; keep the writer's header rather than break it
            return
        fh.seek(8)
        fh.write(text.ljust(size, b" "))  # the format pads headers with spaces
