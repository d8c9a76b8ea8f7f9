"""Process settings read from the environment at call time (never at import)."""

from __future__ import annotations

import os
from pathlib import Path

from pointpeft_cli.errors import UsageError

_TRUE = {"1", "true", "yes", "on"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """Cache root: `override` (``--cache-dir``) > ``POINTPEFT_HOME`` > the platform cache dir."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("POINTPEFT_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_path("pointpeft", appauthor=False))


def is_offline(flag: bool = False) -> bool:
    """True when ``--offline`` was given or ``POINTPEFT_OFFLINE`` is set to a true value."""
    return flag or _env_flag("POINTPEFT_OFFLINE")


def debug() -> bool:
    """True when ``POINTPEFT_DEBUG`` asks for tracebacks."""
    return _env_flag("POINTPEFT_DEBUG")


def _torch_forced(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "torch"


def compiled_kernels() -> bool:
    """False when ``POINTPEFT_KERNELS=torch`` asks for the pure-PyTorch adapter path on CPU."""
    return not _torch_forced("POINTPEFT_KERNELS")


def onednn_linear() -> bool:
    """False when ``POINTPEFT_LINEAR=torch`` asks for PyTorch's own CPU linear layers."""
    return not _torch_forced("POINTPEFT_LINEAR")


#: Values of ``POINTPEFT_MALLOC``.
MALLOC_MODES = ("tuned", "default")


def malloc_mode() -> str:
    """``POINTPEFT_MALLOC``: "tuned" (default; glibc settings for training) or "default"."""
    value = os.environ.get("POINTPEFT_MALLOC", "").strip().lower() or "tuned"
    if value not in MALLOC_MODES:
        raise UsageError(
            f"POINTPEFT_MALLOC={value!r} is not a malloc mode",
            hint="use POINTPEFT_MALLOC=tuned or POINTPEFT_MALLOC=default",
        )
    return value
