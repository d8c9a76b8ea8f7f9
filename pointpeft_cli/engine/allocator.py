"""glibc malloc settings for training on CPU: large tensors are reused, not faulted in afresh.

With glibc's defaults every allocation above the mmap threshold (at most 32 MiB, and 128 KiB
until one such block has been freed) gets fresh pages from the kernel, and the top of the heap
is handed back whenever more than the trim threshold is free. A training step allocates and
frees the same large activations every step, so each step page-faults them all in again:
full fine-tuning of paper-size Point-MAE takes about 290 thousand minor faults per ModelNet40
step and 730 thousand per ScanObjectNN step on the project's 2-core VM (BENCHMARKS.md,
session 13), a fifth to a quarter of its step time. Raising the mmap threshold and turning
trimming off lets freed blocks serve the next step, as a caching allocator does; the process
keeps its peak heap until it exits.

Left alone when the user already chose: `MALLOC_*` variables or `GLIBC_TUNABLES` with
`glibc.malloc`, or a preloaded jemalloc / tcmalloc / mimalloc. `POINTPEFT_MALLOC=default` keeps
glibc's defaults. Not glibc (macOS, Windows, musl): nothing to do.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from pointpeft_cli.settings import malloc_mode

#: `mallopt` parameters (glibc `<malloc.h>`).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap: above every activation of a paper-size step at
#: batch 32 (the largest, 256 MiB, is the ScanObjectNN patch encoder's hidden layer).
MMAP_THRESHOLD_BYTES = 1 << 30
#: -1: never trim the heap top (a per-step drop in use would otherwise be returned and faulted
#: back in at the next step).
TRIM_THRESHOLD = -1

_USER_MALLOC_ENV = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_ARENA_MAX",
)
_PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


@dataclass(frozen=True)
class AllocatorState:
    """What `configure_allocator` did: `tuned` and a one-line description for logs and records."""

    tuned: bool
    detail: str


_applied: AllocatorState | None = None


def _user_choice(env: Mapping[str, str]) -> str | None:
    """Why the user's own allocator settings stand, or None when they made none."""
    for name in _USER_MALLOC_ENV:
        if name in env:
            return f"{name} is set"
    if "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets glibc.malloc"
    preload = env.get("LD_PRELOAD", "")
    for name in _PRELOADED_ALLOCATORS:
        if name in preload:
            return f"{name} is preloaded"
    return None


def _glibc() -> tuple[ctypes.CDLL, str] | None:
    """The process's C library and its version when it is glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc, version().decode()


def _tune(libc: ctypes.CDLL, version: str) -> AllocatorState:
    """Both `mallopt` calls, stopping at the first one glibc refuses."""
    calls = (
        (
            M_MMAP_THRESHOLD,
            MMAP_THRESHOLD_BYTES,
            f"mmap threshold {MMAP_THRESHOLD_BYTES >> 30} GiB",
        ),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD, "no trimming"),
    )
    for param, value, what in calls:
        if libc.mallopt(param, value) != 1:
            return AllocatorState(False, f"malloc: glibc {version} refused {what}")
    return AllocatorState(True, f"malloc: glibc {version}, " + ", ".join(w for *_, w in calls))


def configure_allocator(mode: str | None = None) -> AllocatorState:
    """Apply the training allocator settings once per process (later calls return the first
    result). `mode`: "tuned" or "default"; None reads `POINTPEFT_MALLOC` (default "tuned")."""
    global _applied
    if _applied is not None:
        return _applied
    mode = malloc_mode() if mode is None else mode
    if mode == "default":
        state = AllocatorState(False, "malloc: system default (POINTPEFT_MALLOC=default)")
    elif (reason := _user_choice(os.environ)) is not None:
        state = AllocatorState(False, f"malloc: left as configured ({reason})")
    elif (found := _glibc()) is None:
        state = AllocatorState(False, "malloc: system default (not glibc)")
    else:
        state = _tune(*found)
    _applied = state
    return state
