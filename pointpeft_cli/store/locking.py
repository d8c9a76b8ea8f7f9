"""Per-asset inter-process locks, so concurrent downloads of one asset wait instead of colliding."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_DIR = ".locks"


def lock_path(root: Path, asset_id: str) -> Path:
    """The lock file of an asset; outside the asset directory so removing the asset keeps it."""
    return root / LOCK_DIR / f"{asset_id}.lock"


def _try_lock(fd: int) -> bool:
    if fcntl is None:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _lock_blocking(fd: int) -> None:
    if fcntl is None:  # pragma: no cover - Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # retries for ~10 s, then raises
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


@contextmanager
def asset_lock(
    root: Path, asset_id: str, on_wait: Callable[[], None] | None = None, wait: bool = True
) -> Iterator[bool]:
    """Hold the exclusive lock of `asset_id` for the body.

    The lock file is never deleted: unlinking a flock'ed file lets a third process lock a fresh
    inode while a second still waits on the old one.

    Args:
        root: Cache root.
        asset_id: Asset id.
        on_wait: Called once when another process holds the lock and this one starts waiting.
        wait: When False, yield False at once if the lock is busy instead of waiting.

    Yields:
        True when the lock is held (always, unless `wait` is False and it was busy).
    """
    path = lock_path(root, asset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        held = _try_lock(fd)
        if not held and wait:
            if on_wait is not None:
                on_wait()
            _lock_blocking(fd)
            held = True
        yield held
    finally:
        os.close(fd)  # closing the descriptor releases the lock
