"""Dense layers of the backbone through oneDNN on CPU, with bias, GELU and residual fused.

PyTorch's float32 `linear` on CPU calls MKL's sgemm, which on this project's AMD EPYC machines
reaches 140-180 GFLOP/s, while oneDNN (shipped inside every CPU build of PyTorch, and what
`torch.compile` uses for the same layers) reaches 200-220 GFLOP/s on the same shapes: the
transformer's forward and input-gradient GEMMs run 1.1-1.5x faster (BENCHMARKS.md). oneDNN also
applies the bias, the GELU and a residual add while the output tile is still in cache, where
PyTorch spends one more pass over the output for each.

Weight gradients (`dY^T X`, a long reduction over rows) stay on MKL, which is faster there.

Numerics: float32 in, float32 accumulation, float32 out; only the summation order differs from
MKL's (about 1e-6 relative, the same as between two BLAS libraries). The fused GELU is the exact
(erf) GELU. Used for CPU float32 tensors when PyTorch has oneDNN and the op passes a self-check
against `F.linear`; `POINTPEFT_LINEAR=torch` (`settings.onednn_linear`) forces plain PyTorch,
which CUDA, other dtypes and autocast always use.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from pointpeft_cli.settings import onednn_linear

#: Narrower layers (the patch encoder's 3-wide input, bottleneck adapters) stay on PyTorch:
#: oneDNN's per-call set-up outweighs its gain there.
MIN_FEATURES = 32


def _op():  # type: ignore[no-untyped-def]
    return torch.ops.mkldnn._linear_pointwise


@cache
def _available() -> bool:
    """oneDNN's fused linear exists in this PyTorch build and agrees with `F.linear`."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(64, 48, generator=gen)
        w = torch.randn(40, 48, generator=gen)
        b = torch.randn(40, generator=gen)
        r = torch.randn(64, 40, generator=gen)
        plain = F.linear(x, w, b)
        checks = (
            (_op()(x, w, b, "none", [], ""), plain),
            (_op()(x, w, b, "gelu", [], "none"), F.gelu(plain)),
            (_op().binary(x, r, w, b, "add"), plain + r),
            (_op()(x, w.t().contiguous().t(), None, "none", [], ""), F.linear(x, w)),
        )
        return all(torch.allclose(got, want, rtol=1e-4, atol=1e-4) for got, want in checks)
    except (AttributeError, RuntimeError, NotImplementedError):  # pragma: no cover - old builds
        return False


def usable(x: Tensor, weight: Tensor) -> bool:
    """True when `linear` sends this product to oneDNN."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and min(weight.shape) >= MIN_FEATURES
        # oneDNN copies a strided weight (a column slice) element by element: 100x slower
        and (weight.is_contiguous() or weight.t().is_contiguous())
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and onednn_linear()
        and _available()
    )


class _OneDnnLinear(torch.autograd.Function):
    """`x @ weight.T + bias` on 2-D rows: oneDNN forward and input gradient, MKL weight gradient.

    Saves `x` only when the weight needs a gradient (a frozen layer keeps nothing).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        ctx.has_bias = bias is not None
        return _op()(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        d_x = d_w = d_b = None
        if ctx.needs_input_grad[0]:
            d_x = _op()(grad, weight.t(), None, "none", [], "")
        if ctx.needs_input_grad[1]:
            d_w = grad.t().mm(x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_b = grad.sum(0)
        return d_x, d_w, d_b


def linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    gelu: bool = False,
    residual: Tensor | None = None,
) -> Tensor:
    """`residual + act(x @ weight.T + bias)` with `act` the exact GELU when `gelu`, else identity.

    On CPU float32 the product runs on oneDNN; without autograd the bias, GELU and residual are
    applied inside it. `x` is `[..., in]`, `residual` (if given) has the output's shape.
    """
    if not usable(x, weight):
        out = F.linear(x, weight, bias)
        out = F.gelu(out) if gelu else out
        return out if residual is None else residual + out
    lead = x.shape[:-1]
    rows = x.reshape(-1, x.shape[-1])
    grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if not grad:
        if residual is not None and not gelu:
            res = residual.reshape(-1, weight.shape[0]).contiguous()
            return _op().binary(rows, res, weight, bias, "add").view(*lead, -1)
        out = _op()(rows, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")
        out = out.view(*lead, -1)
        return out if residual is None else out.add_(residual)
    # an untracked view, as `F.linear` makes: in-place ops on the result (`add_`, `relu_`) must
    # not turn into CopySlices clones in backward
    out = torch.ops.aten._unsafe_view(_OneDnnLinear.apply(rows, weight, bias), (*lead, -1))
    out = F.gelu(out) if gelu else out
    return out if residual is None else residual + out


def backend(device: str | torch.device = "cpu") -> str:
    """Which library runs the backbone's float32 dense layers on `device` (for reports)."""
    probe = torch.zeros(1, MIN_FEATURES, device=device)
    return "oneDNN" if usable(probe, torch.zeros(MIN_FEATURES, MIN_FEATURES)) else "PyTorch"
