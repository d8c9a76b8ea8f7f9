"""Seeds, device choice, deterministic mode and mixed precision (CUDA only)."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from pointpeft_cli.errors import UsageError


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's global generators (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A seed derived from (seed, epoch, stream): each epoch's randomness is reproducible on its
    own, which is what makes `--resume` bit-exact without saving generator states."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0])


def pick_device(spec: str = "auto") -> torch.device:
    """`auto` = CUDA when available, else CPU; an unavailable CUDA device is a usage error."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown device {spec!r}", hint="use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA was requested but is not available", hint="use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{spec} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {spec!r}", hint="use auto, cpu, cuda or cuda:N")
    return device


def set_deterministic(enabled: bool) -> None:
    """Deterministic algorithms (slower on CUDA); CPU kernels used here are deterministic anyway."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device`: always None (fp32) on CPU."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16 if amp == "auto" else None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast on CUDA with `dtype`, a no-op otherwise."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
