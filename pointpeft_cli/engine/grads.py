"""Gradient buffers allocated once, before the first forward, and kept for the whole run.

With `zero_grad(set_to_none=True)` every step frees the gradients and the next backward
allocates them again, wherever the heap has room among that step's activations. On CPU, glibc
does not give those scattered holes back, so the process's resident memory grows for several
steps beyond what it holds live. Allocated before the first forward and zeroed in place
(`zero_grad(set_to_none=False)`) the buffers stay put and every step allocates in the same
pattern: peak RSS fell 16-18 % for Point-PEFT and 3-6 % for full fine-tuning at paper size,
at no measurable cost in time (BENCHMARKS.md, Run 10). The numbers do not change: backward
adds each gradient to a zero buffer, and every trainable parameter of every model gets a
gradient each step (a kept buffer that stayed zero would still let AdamW decay its parameter;
tests guard this).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def keep_gradients(params: Iterable[Tensor]) -> None:
    """Give every trainable parameter without a gradient a zeroed `.grad` now.

    Parameters that already have one keep it, and frozen ones stay without; call it before the
    first forward, and zero with `optimizer.zero_grad(set_to_none=False)` from then on.
    """
    for p in params:
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)
