"""Streaming sha256 of files and directory trees."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

CHUNK = 1 << 20


def sha256_file(path: Path, advance: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks.

    Args:
        path: File to hash.
        advance: Called with the number of bytes read after each chunk (progress).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            if advance is not None:
                advance(len(chunk))
    return digest.hexdigest()


def tree_digest(records: Iterable[tuple[str, str]]) -> str:
    """One sha256 for a set of (relative path, file sha256) pairs, independent of their order."""
    digest = hashlib.sha256()
    for rel, sha in sorted(records):
        digest.update(f"{rel}\0{sha}\n".encode())
    return digest.hexdigest()


def write_hashed(
    src: IO[bytes], target: Path, advance: Callable[[int], None] | None = None
) -> tuple[int, str]:
    """Copy a stream into a new file (never overwriting one), returning (bytes, sha256)."""
    digest = hashlib.sha256()
    size = 0
    with open(target, "xb") as out:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            if advance is not None:
                advance(len(chunk))
    return size, digest.hexdigest()
