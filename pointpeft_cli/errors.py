"""Error types; each carries the process exit code the CLI maps it to (cli.md table)."""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTEGRITY = 4
EXIT_INTERRUPTED = 130


class PointPeftError(Exception):
    """Base class: a one-line message and an optional hint for the user."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(PointPeftError, ValueError):
    """Bad flags, config keys or values; also bad user data that the user must fix."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """Unknown preset key, invalid value, unknown preset."""


class DataError(UsageError):
    """User data that cannot be used as given (missing files, unknown classes, too-small clouds)."""


class AssetUnavailableError(PointPeftError):
    """Asset not available: not cached while offline, network failure, manual asset missing."""

    exit_code = EXIT_UNAVAILABLE


class AssetNotCachedError(AssetUnavailableError, FileNotFoundError):
    """The asset is not in the cache and may not be fetched now."""


class NetworkError(AssetUnavailableError, ConnectionError):
    """The download failed at the network level."""


class StorageError(UsageError, OSError):
    """A file or directory cannot be written: permissions, read-only filesystem, not a folder."""


class DiskFullError(AssetUnavailableError, OSError):
    """The disk (or quota) filled up during a write; what was being written was discarded."""


class IntegrityError(PointPeftError):
    """Checksum/size mismatch, corrupt file, unexpected key layout, adapter-base mismatch."""

    exit_code = EXIT_INTEGRITY


class ChecksumMismatchError(IntegrityError):
    """A file's sha256 or size differs from the expected value."""


class CorruptFileError(IntegrityError):
    """A file cannot be parsed in its declared format, or holds invalid values."""


class LayoutMismatchError(IntegrityError):
    """A checkpoint's keys or shapes do not match the expected layout."""


class UnsafeFileError(IntegrityError):
    """A file needs pickle (or holds unsafe archive members) and was not trusted explicitly."""


class TrainingDiverged(PointPeftError):
    """The loss became NaN or infinite; the last good checkpoint stays resumable."""

    exit_code = EXIT_INTERNAL


class RunInterrupted(PointPeftError):
    """The user interrupted a command; whatever was written is resumable."""

    exit_code = EXIT_INTERRUPTED


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def storage_error(
    exc: OSError, path: object = None, verb: str | None = "cannot write"
) -> PointPeftError | None:
    """The user-facing error for a failed file-system call, or None when it is not a storage
    problem (full disk, permissions, read-only file system, a file where a folder should be).

    Args:
        exc: The OSError raised.
        path: The file being written (named instead of a temp file `exc` may name).
        verb: How the message starts (None when it is not known whether it was a write).
    """
    if isinstance(exc, PointPeftError):  # already reported in the user's terms
        return None
    where = path if path is not None else exc.filename
    reason = exc.strerror or str(exc)
    head = " ".join(str(p) for p in (verb, where) if p is not None)
    message = f"{head}: {reason}" if head else reason
    err: PointPeftError
    if exc.errno in _DISK_FULL:
        err = DiskFullError(
            message,
            hint="free some space, or use another --cache-dir / --out; nothing half-written "
            "was kept",
        )
    elif exc.errno in _UNWRITABLE:
        err = StorageError(
            message,
            hint="choose a writable --out / --cache-dir (or fix the folder's permissions)",
        )
    else:
        return None
    err.errno = exc.errno  # type: ignore[attr-defined]  # still an OSError for callers
    return err
