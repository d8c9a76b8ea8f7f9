"""Error types; each carries the process exit code the CLI maps it to (cli.md table)."""

from __future__ import annotations

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
