"""Stable identity hashes for data sources and processed caches."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

#: Bump when any preprocessing changes its output, so old processed caches are not reused.
PROCESSING_VERSION = 1


def digest(*parts: object) -> str:
    """16-hex-digit sha256 of JSON-encoded ``parts`` (keys sorted)."""
    blob = json.dumps([PROCESSING_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_identity(path: Path, root: Path | None = None) -> list[object]:
    """``[relative path, size, mtime_ns]`` of one file: cheap, changes when the file does."""
    st = path.stat()
    name = path.relative_to(root).as_posix() if root is not None else path.name
    return [name, st.st_size, st.st_mtime_ns]


def files_digest(paths: Iterable[Path], root: Path | None = None, **params: object) -> str:
    """Fingerprint of a set of source files plus the parameters that processed them."""
    return digest([file_identity(p, root) for p in paths], params)
