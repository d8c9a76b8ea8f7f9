"""Test-only fault injector: runs `pointpeft ARGS` in this process and SIGKILLs it at one point.

Usage (from the repository root)::

    python -m tests.reliability.faultrun SPEC -- ARGS...

The process really dies by SIGKILL (no `finally`, no atexit, no flush), so what it leaves on disk
is exactly what a power cut or the OOM killer would leave. Nothing in the package knows about
this: the hooks are a public torch optimizer hook and a wrapper around `os.replace`, the one call
through which every atomic write in pointpeft becomes visible.

SPEC is one of:

* ``step:N`` -- just before the N-th optimizer step of this process (the batch's forward and
  backward ran; the weights were not updated);
* ``replace:GLOB:N:MODE`` -- at the N-th ``os.replace`` whose destination's file name matches
  GLOB (fnmatch), with MODE ``before`` (the temp file is complete but not renamed), ``torn``
  (the temp file is cut to half its size and not renamed: a kill in the middle of the write) or
  ``after`` (just after the rename, before anything else is written);
* ``none`` -- run normally (the uninterrupted reference uses the same entry point).
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm_step(n: int) -> None:
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen = {"n": 0}

    def hook(optimizer, args, kwargs):  # type: ignore[no-untyped-def]
        seen["n"] += 1
        if seen["n"] == n:
            _die()

    register_optimizer_step_pre_hook(hook)


def _arm_replace(pattern: str, n: int, mode: str) -> None:
    if mode not in ("before", "torn", "after"):
        raise SystemExit(f"faultrun: unknown mode {mode!r}")
    real = os.replace
    seen = {"n": 0}

    def replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not fnmatch.fnmatch(Path(os.fsdecode(dst)).name, pattern):
            return real(src, dst, *args, **kwargs)
        seen["n"] += 1
        if seen["n"] != n:
            return real(src, dst, *args, **kwargs)
        if mode == "torn" and Path(src).is_file():
            os.truncate(src, Path(src).stat().st_size // 2)
        if mode == "after":
            real(src, dst, *args, **kwargs)
        _die()

    os.replace = replace  # pathlib.Path.replace calls os.replace too


def main(argv: list[str]) -> None:
    """Parse SPEC, arm the fault, then run the CLI with the remaining arguments."""
    if "--" not in argv:
        raise SystemExit("usage: python -m tests.reliability.faultrun SPEC -- ARGS...")
    sep = argv.index("--")
    (spec,), args = argv[:sep], argv[sep + 1 :]
    kind, *rest = spec.split(":")
    if kind == "step":
        _arm_step(int(rest[0]))
    elif kind == "replace":
        _arm_replace(rest[0], int(rest[1]), rest[2])
    elif kind != "none":
        raise SystemExit(f"faultrun: unknown spec {spec!r}")
    from pointpeft_cli.cli.app import app

    sys.argv = ["pointpeft", *args]
    app()


if __name__ == "__main__":
    main(sys.argv[1:])
