"""Point-PEFT adapter modules: bottleneck adapters and the geometry-aware adapter.

Every class here subclasses `PeftModule`, the marker that `trainable.py` uses to decide
trainability structurally: all parameters of a `PeftModule` train under `point-peft`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:
    from pointpeft_cli.models.transformer import Block
    from pointpeft_cli.peft.context import GeometryLevel


class PeftModule(nn.Module):
    """Marker base: a module added by Point-PEFT; all of its parameters are trainable."""


class QuickGELU(nn.Module):
    """`x * sigmoid(1.702 x)` (the original adapters' activation)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class Bottleneck(PeftModule):
    """The original `AdapterSuper`: `ln2(drop(QuickGELU(ln1(x))))`, plus `x` when residual.

    `ln1`/`ln2` are the down/up Linear projections (names kept from the original release).
    Init as the original: xavier-uniform weights, N(0, 1e-6) biases.
    """

    def __init__(self, dim: int, rank: int, dropout: float, residual: bool = True) -> None:
        super().__init__()
        self.ln1 = nn.Linear(dim, rank)
        self.activate = QuickGELU()
        self.dropout = nn.Dropout(dropout)
        self.ln2 = nn.Linear(rank, dim)
        self.residual = residual
        for lin in (self.ln1, self.ln2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.normal_(lin.bias, std=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        out = self.ln2(self.dropout(self.activate(self.ln1(x))))
        return x + out if self.residual else out


class MlpAdapter(Bottleneck):
    """MLP-branch adapter (`AdapterSuper_f`, no residual) pre-scaled: `scale * bottleneck(h)`."""

    def __init__(self, dim: int, rank: int, dropout: float, scale: float) -> None:
        super().__init__(dim, rank, dropout, residual=False)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * super().forward(x)


class OutTransform(nn.Sequential, PeftModule):
    """BatchNorm1d + GELU on pooled group features (`out_transform.0` = the BN)."""

    def __init__(self, dim: int) -> None:
        super().__init__(nn.BatchNorm1d(dim), nn.GELU())


class PeftLayerNorm(nn.LayerNorm, PeftModule):
    """The geometry adapter's shared `norm3`."""


class LocalAttention(PeftModule):
    """The original `Attention1` (`blocks.attn1`): narrow attention inside each local group.

    qkv projects to `inner` = 18 channels (6 heads x 3), the scale is `inner ** -0.5` (not the
    per-head width), and `proj` maps back to the model width.
    """

    def __init__(self, dim: int, num_heads: int = 6, inner: int = 18) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.inner = inner
        self.scale = inner**-0.5
        self.qkv = nn.Linear(dim, inner * 3, bias=False)
        self.proj = nn.Linear(inner, dim)

    def heads(self, qkv: Tensor) -> Tensor:
        """Attention within groups from precomputed `qkv [N, K, 3*inner]` -> `[N, K, inner]`."""
        n, k, _ = qkv.shape
        q, key, v = qkv.reshape(n, k, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, key, v, scale=self.scale)
        return out.transpose(1, 2).reshape(n, k, self.inner)

    def forward(self, x: Tensor) -> Tensor:
        """Attention over the token axis of `[N, K, dim]` (the original's `attn1(x)`)."""
        return self.proj(self.heads(self.qkv(x)))


def take_rows(x: Tensor, flat_idx: Tensor) -> Tensor:
    """Rows of `x [B, R, C]` at batch-flattened indices (`b * R + r`) -> `[len(idx), C]`.

    `index_select` on the flattened rows is several times faster on CPU than `gather` with an
    expanded index, and its backward is a plain `index_add`.
    """
    return x.reshape(-1, x.shape[-1]).index_select(0, flat_idx)


class _GroupMax(torch.autograd.Function):
    """Max over dim 1 of `[N, K, C]`, gradient to the first maximum (as `max(dim).values`).

    `amax` plus a uint8 rank trick finds the winners an order of magnitude faster than
    `max(dim)` with indices on CPU, and only the small `[N, C]` index is kept for backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        values = x.amax(dim=1)
        k = x.shape[1]
        rank = torch.arange(k, 0, -1, device=x.device, dtype=torch.int16).view(1, k, 1)
        first = ((x == values.unsqueeze(1)) * rank).amax(dim=1)  # k - index of the first max
        ctx.save_for_backward(
            (k - first).clamp_(0, k - 1).to(torch.uint8 if k < 256 else torch.int16)
        )
        ctx.k = k
        return values

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (index,) = ctx.saved_tensors
        n, c = grad.shape
        out = grad.new_zeros(n, ctx.k, c)
        return out.scatter_(1, index.long().unsqueeze(1), grad.unsqueeze(1))


def group_max(x: Tensor) -> Tensor:
    """`x.max(dim=1).values` for `[N, K, C]`, fast on CPU (see `_GroupMax`)."""
    return _GroupMax.apply(x)


def _local_pool(
    x: Tensor, flat_idx: Tensor, keep: Tensor | None, local: tuple[nn.Module, nn.Module], k: int
) -> Tensor:
    """Members + DropPath(attn1(norm3(members))), max-pooled per group -> `[B * G2, C]`."""
    norm3, attn1 = local
    c = x.shape[-1]
    # LayerNorm and qkv act row by row, so computing them before the gather is the same maths on
    # 8x fewer rows, and the gathered tensor is 54 wide instead of C.
    qkv = take_rows(attn1.qkv(norm3(x)), flat_idx).view(-1, k, 3 * attn1.inner)
    heads = attn1.heads(qkv)  # [B*G2, K, inner]
    # members + DropPath(proj(heads)) as one GEMM into the gathered members: the per-group mask
    # scales the heads and, as an extra input column, the proj bias.
    ones = heads.new_ones(heads.shape[0], k, 1)
    if keep is not None:
        heads, ones = heads * keep.unsqueeze(1), ones * keep.unsqueeze(1)
    lhs = torch.cat([heads, ones], dim=-1).view(-1, attn1.inner + 1)
    rhs = torch.cat([attn1.proj.weight.t(), attn1.proj.bias.unsqueeze(0)], dim=0)
    members = take_rows(x, flat_idx)  # in-place GEMM: cast in case autocast is on
    members = members.addmm_(lhs.to(members.dtype), rhs.to(members.dtype))
    return group_max(members.view(-1, k, c))


def _propagate(
    x: Tensor,
    normed: Tensor,
    flat_center: Tensor,
    weights: Tensor,
    num_prompt: int,
    modules: tuple[nn.Module, nn.Module],
    coefs: tuple[float, float],
) -> Tensor:
    """Activate the pooled groups, add centre rows, propagate, then `adapter1` on cls + tokens."""
    act, adapter1 = modules
    center_cof, propagate_cof = coefs
    b, _, c = x.shape
    vis = act(normed).view(b, -1, c) + center_cof * take_rows(x, flat_center).view(b, -1, c)
    tokens = x[:, 1 + num_prompt :] + propagate_cof * torch.bmm(weights, vis)
    return adapter1(torch.cat([x[:, :1], tokens], dim=1))


def _run(fn, *args, recompute: bool) -> Tensor:  # type: ignore[no-untyped-def]
    """`fn(*args)`, recomputed in backward instead of saving its activations when training.

    Non-reentrant checkpointing keeps only the inputs (the block output `x`, indices, small
    tensors) and re-runs the memory-bound segment in backward with the RNG state restored, so
    values and gradients are bit-identical to the plain call.
    """
    if recompute and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def geometry_update(
    block: Block,
    x: Tensor,
    num_prompt: int,
    level: GeometryLevel,
    local: tuple[nn.Module, nn.Module],
    coefs: tuple[float, float],
    recompute: bool = True,
) -> Tensor:
    """The geometry-aware adapter after a block's MLP branch (method.md §3.4-3.7, fixed).

    Rows = [prompts, tokens] of each sample (cls excluded). Groups of `level` index those rows;
    each group's members attend to each other through the shared `attn1` (DropPath residual),
    are max-pooled, pass `out_transform`, gain `center_cof` x their centre row, and are
    propagated back to the tokens by inverse-distance weights. `adapter1` then runs on cls and
    tokens; the prompts are dropped (they are discarded after every block, so transforming them
    would be wasted work).

    The two segments around `out_transform`'s BatchNorm (which updates running statistics and so
    must run once) are recomputed in backward when `recompute` is on: they are cheap and
    memory-bound, while what they would save is about a fifth of Point-PEFT's activations
    (the gathered members, local attention, norm3 output, adapter1 input).

    Args:
        block: the block whose `out_transform` / `adapter1` / `drop_path` are used.
        x: `[B, 1 + T + G, C]` = cls, T prompts, G tokens (contiguous).
        num_prompt: T (0 in unprompted layers).
        level: second-level grouping over these rows and its propagation weights.
        local: the shared `(norm3, attn1)`.
        coefs: `(center_cof, propagate_cof)`.
        recompute: trade the segments' saved activations for a re-run in backward.

    Returns:
        `[B, 1 + G, C]`.
    """
    x = x.contiguous()
    b = x.shape[0]
    keep = block.drop_path.sample_mask(b * level.groups, x)
    pooled = _run(
        partial(_local_pool, local=local, k=level.size),
        x, level.flat_idx, keep, recompute=recompute,
    )  # fmt: skip
    bn, act = block.out_transform  # the GELU is recomputed with the second segment
    modules = (act, block.adapter1)
    fn = partial(_propagate, num_prompt=num_prompt, modules=modules, coefs=coefs)
    return _run(fn, x, bn(pooled), level.flat_center, level.weights, recompute=recompute)
