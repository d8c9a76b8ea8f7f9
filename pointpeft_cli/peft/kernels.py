"""Compiled CPU kernels (numba) for the geometry-aware adapter's two memory-bound pieces.

The adapter's local attention (6 heads of width 3 over groups of 16) and its max-pool over
members (`member_max`) do little arithmetic per byte, and in eager PyTorch each becomes a chain
of passes over tensors 16x the size of the rows (gathers, flash attention on 3-wide heads, a
dense one-hot backward). Fused loops over one group at a time keep all of it in L1/L2.

Every kernel runs one sample per work item (`prange` over samples). A group's member rows
belong to its own sample, so samples touch disjoint rows: there are no write races, and each
value is summed in one fixed order whatever the thread count, so results are deterministic and
independent of it. Numerics: float32, the same maths as the PyTorch path (pinned by tests); the
summation order differs, and the softmax uses a polynomial `exp` (at most 2 ulp from the exact).

Used on CPU float32 tensors when numba imports; `POINTPEFT_KERNELS=torch` forces the PyTorch
path (`pointpeft_cli.settings.compiled_kernels`), which CUDA and other dtypes always use.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from pointpeft_cli.settings import compiled_kernels


@cache
def _numba() -> ModuleType | None:
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; kept for odd platforms
        return None
    # Starting numba's thread pool calls omp_set_num_threads(NUMBA_NUM_THREADS), and that lands
    # in PyTorch's OpenMP runtime too: a process that asked torch for fewer threads than the
    # machine has cores would run on all of them from then on (two 1-thread runs on 2 cores ran
    # 2-3x slower). Start the pool here, once, and give torch its own setting back.
    threads = torch.get_num_threads()
    numba.get_num_threads()  # starts the pool
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return numba


def usable(*tensors: Tensor) -> bool:
    """True when the compiled kernels apply to these tensors (CPU float32, numba present)."""
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return False  # checked first: a CUDA run never imports numba or starts its thread pool
    return compiled_kernels() and _numba() is not None


def _sync_threads() -> None:
    """Run the kernels on as many threads as torch uses (the user's `set_num_threads`)."""
    numba = _numba()
    assert numba is not None
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _array(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


@cache
def _kernels() -> ModuleType:
    """The compiled kernels (numba compiles them on first call, or loads them from its cache)."""
    from pointpeft_cli.peft import _numba_kernels

    return _numba_kernels


def warm_up() -> bool:
    """Load (or compile) the kernels now, on tiny inputs, so that the first training step pays
    neither numba's import nor its compilation. Returns whether the kernels are in use."""
    if not usable(torch.zeros(1)):
        return False
    k, groups, heads = 2, 1, 1
    idx = torch.tensor([1, 2])
    # fixed values, not the global RNG: warming up must not change a seeded run
    qkv = torch.linspace(-1, 1, 18).view(3, 6).requires_grad_(True)
    group_attention(qkv, idx, k, heads, 0.5, groups).sum().backward()
    rows, lhs, rhs = (torch.linspace(-1, 1, n * m).view(n, m) for n, m in ((3, 4), (2, 3), (3, 4)))
    values, first = pool_forward(rows, idx, lhs, rhs, k, groups)
    pool_backward(torch.ones_like(values), first, idx, lhs, rhs, rows.shape[0], k, groups)
    return True


def _kernel(name: str):  # type: ignore[no-untyped-def]
    _sync_threads()
    return getattr(_kernels(), name)


def _check_groups(total: int, groups: int) -> None:
    if groups < 1 or total % groups:
        raise ValueError(f"{total} groups do not split into samples of {groups}")


class GroupAttention(torch.autograd.Function):
    """Multi-head self-attention inside each group, reading q/k/v straight from row-wise `qkv`.

    `qkv [R, 3 * inner]` holds q, k, v of every row (head h at channels `h * d : (h + 1) * d`
    of each third); `idx [K * N]` lists the member rows of the N groups member-major, and every
    `groups` consecutive groups belong to one sample whose rows no other sample uses. Output:
    `[K, N, inner]`, member-major. Nothing bigger than `qkv` is saved: backward recomputes the
    probabilities of one group at a time and adds the q/k/v gradients into the rows directly.
    """

    @staticmethod
    def forward(ctx, qkv: Tensor, idx: Tensor, k: int, heads: int, scale: float, groups: int):  # type: ignore[override]
        n = idx.shape[0] // k
        _check_groups(n, groups)
        inner = qkv.shape[1] // 3
        out = qkv.new_empty(k, n, inner)
        kernel = _kernel("attend_forward")
        kernel(_array(qkv), _array(idx), k, heads, np.float32(scale), groups, out.numpy())
        ctx.save_for_backward(qkv, idx)
        ctx.meta = (k, heads, scale, groups)
        return out

    @staticmethod
    def backward(ctx, d_out: Tensor):  # type: ignore[override]
        qkv, idx = ctx.saved_tensors
        k, heads, scale, groups = ctx.meta
        d_qkv = torch.zeros_like(qkv, memory_format=torch.contiguous_format)
        kernel = _kernel("attend_backward")
        kernel(
            _array(qkv),
            _array(idx),
            k,
            heads,
            np.float32(scale),
            groups,
            _array(d_out),
            d_qkv.numpy(),
        )
        return d_qkv, None, None, None, None, None


def group_attention(
    qkv: Tensor, idx: Tensor, k: int, heads: int, scale: float, groups: int
) -> Tensor:
    """`[K, N, inner]` attention inside each group of rows of `qkv` (see `GroupAttention`)."""
    return GroupAttention.apply(qkv, idx, k, heads, scale, groups)


def pool_forward(
    rows: Tensor, idx: Tensor, lhs: Tensor, rhs: Tensor, k: int, groups: int
) -> tuple[Tensor, Tensor]:
    """`(values [N, C], first [N, C] uint8)` of `member_max` (first maximal member per channel)."""
    n = idx.shape[0] // k
    _check_groups(n, groups)
    values = rows.new_empty(n, rows.shape[1])
    first = torch.empty(n, rows.shape[1], dtype=torch.uint8 if k <= 256 else torch.int16)
    kernel = _kernel("pool_forward")
    kernel(
        _array(rows),
        _array(idx),
        _array(lhs),
        _array(rhs),
        k,
        groups,
        values.numpy(),
        first.numpy(),
    )
    return values, first


def pool_backward(
    grad: Tensor,
    first: Tensor,
    idx: Tensor,
    lhs: Tensor,
    rhs: Tensor,
    num_rows: int,
    k: int,
    groups: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients `(rows [R, C], lhs [K * N, J], rhs [J, C])` of `member_max`: each channel's
    gradient goes to its first maximal member only, as in `torch.max`."""
    n, c = grad.shape
    width = lhs.shape[1]
    d_rows = grad.new_zeros(num_rows, c)
    d_lhs = grad.new_zeros(k * n, width)
    # one partial sum per sample, added in sample order: deterministic at any thread count
    d_rhs_t = grad.new_zeros(n // groups, c, width)
    kernel = _kernel("pool_backward")
    kernel(
        _array(grad),
        _array(first),
        _array(idx),
        _array(lhs),
        _array(rhs.t()),
        k,
        groups,
        d_rows.numpy(),
        d_lhs.numpy(),
        d_rhs_t.numpy(),
    )
    return d_rows, d_lhs, d_rhs_t.sum(0).t()
