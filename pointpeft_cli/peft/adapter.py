"""Point-PEFT adapter modules: bottleneck adapters and the geometry-aware adapter.

Every class here subclasses `PeftModule`, the marker that `trainable.py` uses to decide
trainability structurally: all parameters of a `PeftModule` train under `point-peft`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pointpeft_cli.models.recipes import saved_as_recipe
from pointpeft_cli.models.transformer import Dropout
from pointpeft_cli.peft import kernels

if TYPE_CHECKING:
    from pointpeft_cli.models.transformer import Block
    from pointpeft_cli.peft.context import GeometryLevel


class PeftModule(nn.Module):
    """Marker base: a module added by Point-PEFT; all of its parameters are trainable."""


class QuickGELU(nn.Module):
    """`x * sigmoid(1.702 x)` (the original adapters' activation)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def add_linear(base: Tensor, hidden: Tensor, lin: nn.Linear, scale: float = 1.0) -> Tensor:
    """`base + scale * lin(hidden)` as a single `addmm` (the bias rides on a column of ones).

    A bottleneck's up-projection is a thin product (rank 8-16) into a wide output; written
    out, its bias, scale and residual each cost one more pass over that output, more than the
    product itself. Same maths; only the rounding order differs. Under autocast the plain
    expression runs, so the residual stream keeps its dtype.
    """
    if torch.is_autocast_enabled(base.device.type) or base.dtype != hidden.dtype:
        return base + scale * lin(hidden)
    rows = hidden.reshape(-1, hidden.shape[-1])
    weight = lin.weight
    if lin.bias is not None:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
        weight = torch.cat([weight, lin.bias.unsqueeze(1)], dim=1)
    out = torch.addmm(base.reshape(-1, base.shape[-1]), rows, weight.t(), alpha=scale)
    return out.view(base.shape)


class Bottleneck(PeftModule):
    """The original `AdapterSuper`: `ln2(drop(QuickGELU(ln1(x))))`, plus `x` when residual.

    `ln1`/`ln2` are the down/up Linear projections (names kept from the original release).
    Init as the original: xavier-uniform weights, N(0, 1e-6) biases.
    """

    def __init__(self, dim: int, rank: int, dropout: float, residual: bool = True) -> None:
        super().__init__()
        self.ln1 = nn.Linear(dim, rank)
        self.activate = QuickGELU()
        self.dropout = Dropout(dropout)
        self.ln2 = nn.Linear(rank, dim)
        self.residual = residual
        for lin in (self.ln1, self.ln2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.normal_(lin.bias, std=1e-6)

    def hidden(self, x: Tensor) -> Tensor:
        """The rank-wide activation `drop(QuickGELU(ln1(x)))`."""
        return self.dropout(self.activate(self.ln1(x)))

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.hidden(x)
        return add_linear(x, hidden, self.ln2) if self.residual else self.ln2(hidden)


class MlpAdapter(Bottleneck):
    """MLP-branch adapter (`AdapterSuper_f`, no residual) pre-scaled: `scale * bottleneck(h)`."""

    def __init__(self, dim: int, rank: int, dropout: float, scale: float) -> None:
        super().__init__(dim, rank, dropout, residual=False)
        self.scale = scale

    def output(self, hidden: Tensor) -> Tensor:
        """`scale * ln2(hidden)`: the adapter's output from its `hidden` activation."""
        return self.scale * self.ln2(hidden)

    def add_to(self, base: Tensor, hidden: Tensor) -> Tensor:
        """`base + output(hidden)`, as one product (`add_linear`)."""
        return add_linear(base, hidden, self.ln2, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.hidden(x))


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

    def attend(self, qkv: Tensor) -> Tensor:
        """Attention within groups from precomputed `qkv [N, K, 3*inner]` -> `[N, heads, K, d]`."""
        n, k, _ = qkv.shape
        q, key, v = qkv.view(n, k, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        return F.scaled_dot_product_attention(q, key, v, scale=self.scale)

    def heads(self, qkv: Tensor) -> Tensor:
        """Attention within groups from precomputed `qkv [N, K, 3*inner]` -> `[N, K, inner]`."""
        n, k, _ = qkv.shape
        return self.attend(qkv).transpose(1, 2).reshape(n, k, self.inner)

    def forward(self, x: Tensor) -> Tensor:
        """Attention over the token axis of `[N, K, dim]` (the original's `attn1(x)`)."""
        return self.proj(self.heads(self.qkv(x)))


def take_rows(x: Tensor, flat_idx: Tensor) -> Tensor:
    """Rows of `x [B, R, C]` at batch-flattened indices (`b * R + r`) -> `[len(idx), C]`.

    `index_select` on the flattened rows is several times faster on CPU than `gather` with an
    expanded index, and its backward is a plain `index_add`.
    """
    return x.reshape(-1, x.shape[-1]).index_select(0, flat_idx)


#: Bytes of members `[k, n, C]` materialised at once on CPU: chunks stay in cache and under
#: glibc's mmap threshold, so they are neither page-faulted in nor zeroed afresh every call.
MEMBER_CHUNK_BYTES = 6 * 2**20


def _chunks(n: int, row_bytes: int, device: torch.device) -> list[tuple[int, int]]:
    """`[start, stop)` ranges over n groups, each about `MEMBER_CHUNK_BYTES` (one on GPU)."""
    step = n if device.type != "cpu" else max(1, MEMBER_CHUNK_BYTES // row_bytes)
    return [(s, min(n, s + step)) for s in range(0, n, step)]


class _MemberMax(torch.autograd.Function):
    """`max_j (rows[idx[j, n]] + lhs[j, n] @ rhs)` over the k members of each of N groups.

    The members tensor `[k, N, C]` is the largest thing the geometry adapter makes; this
    function never keeps it, and on CPU never makes it whole (it works through cache-sized
    chunks of groups). Forward finds the first maximal member per (group, channel) and saves
    only that index (uint8) with the small `lhs`; backward routes each channel's gradient to
    its winning row directly (a scatter of `N x C` values, not of `k x N x C`), and builds the
    one-hot gradient, chunk by chunk, only for the two thin matmuls of `lhs` and `rhs`.

    On CPU float32 with `groups` given, compiled kernels (`kernels.pool_forward` /
    `pool_backward`) do the same in one pass per group, with no one-hot at all.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, rows: Tensor, idx: Tensor, lhs: Tensor, rhs: Tensor, k: int, groups: int
    ) -> Tensor:
        ctx.shape = (rows.shape[0], rows.shape[1], k)
        ctx.groups = groups if kernels.usable(rows, lhs, rhs) else 0
        if ctx.groups:
            values, first = kernels.pool_forward(rows, idx, lhs, rhs, k, groups)
            ctx.save_for_backward(idx, lhs, rhs, first)
            return values
        c, n, width = rows.shape[1], idx.shape[0] // k, lhs.shape[1]
        values = rows.new_empty(n, c)
        index_dtype = torch.uint8 if k <= 256 else torch.int16
        first = torch.empty(n, c, dtype=index_dtype, device=rows.device)
        order = torch.arange(k, dtype=rows.dtype, device=rows.device).view(k, 1, 1)
        member_idx, member_lhs = idx.view(k, n), lhs.view(k, n, width)
        spans = _chunks(n, k * c * rows.element_size(), rows.device)
        buffer = rows.new_empty(k * (spans[0][1] - spans[0][0]) * c)
        for start, stop in spans:
            m = buffer[: k * (stop - start) * c].view(-1, c)
            torch.index_select(rows, 0, member_idx[:, start:stop].reshape(-1), out=m)
            m = m.addmm_(member_lhs[:, start:stop].reshape(-1, width), rhs).view(k, -1, c)
            top = torch.amax(m, 0, out=values[start:stop])
            # rank = k * ceil(max - m) + j: exactly j for a maximal member and >= k for the
            # others, so its minimum is the first maximal member (torch.max's choice).
            rank = torch.sub(top, m, out=m).ceil_()
            first[start:stop] = torch.add(order, rank, alpha=k, out=rank).amin(0)
        ctx.save_for_backward(idx, lhs, rhs, first)
        return values

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        idx, lhs, rhs, first = ctx.saved_tensors
        num_rows, c, k = ctx.shape
        n, width = grad.shape[0], lhs.shape[1]
        grad = grad.contiguous()
        if ctx.groups:
            d_rows, d_lhs, d_rhs = kernels.pool_backward(
                grad, first, idx, lhs, rhs, num_rows, k, ctx.groups
            )
            return d_rows, None, d_lhs, d_rhs, None, None
        first = first.long()
        d_rows = d_lhs = d_rhs = None
        if ctx.needs_input_grad[0]:
            group = torch.arange(n, device=grad.device).unsqueeze(1)
            winner = idx[first * n + group] * c  # flat offset of each winning row
            winner += torch.arange(c, device=grad.device)
            d_rows = grad.new_zeros(num_rows * c).index_add_(0, winner.view(-1), grad.view(-1))
            d_rows = d_rows.view(num_rows, c)
        need_lhs, need_rhs = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        if need_lhs or need_rhs:
            d_lhs = lhs.new_empty(k, n, width) if need_lhs else None
            d_rhs = rhs.new_zeros(rhs.shape) if need_rhs else None
            member_lhs = lhs.view(k, n, width)
            spans = _chunks(n, k * c * grad.element_size(), grad.device)
            buffer = grad.new_zeros(k * (spans[0][1] - spans[0][0]) * c)
            for start, stop in spans:
                # one-hot along the members, in a buffer that is zeroed again after use
                dense = buffer[: k * (stop - start) * c].view(k, -1, c)
                winners = first[start:stop].unsqueeze(0)
                dense.scatter_(0, winners, grad[start:stop].unsqueeze(0))
                flat = dense.view(-1, c)
                if d_lhs is not None:
                    d_lhs[:, start:stop] = (flat @ rhs.t()).view(k, -1, width)
                if d_rhs is not None:
                    d_rhs.addmm_(member_lhs[:, start:stop].reshape(-1, width).t(), flat)
                dense.zero_()
            d_lhs = None if d_lhs is None else d_lhs.view(k * n, width)
        return d_rows, None, d_lhs, d_rhs, None, None


def member_max(
    rows: Tensor, idx: Tensor, lhs: Tensor, rhs: Tensor, k: int, groups: int = 0
) -> Tensor:
    """`(rows[idx] + lhs @ rhs).view(k, N, C).max(0).values` without keeping the members.

    Args:
        rows: `[R, C]` source rows.
        idx: `[k * N]` member rows, member-major (`j * N + n`).
        lhs: `[k * N, J]`, rhs: `[J, C]`: a low-rank update added to every member.
        k: members per group.
        groups: groups per sample, when every run of `groups` consecutive groups draws its
            members from rows that no other sample's groups use; it lets the compiled CPU
            kernel (`kernels.pool_forward`) split the work by sample. 0: the PyTorch path.
    """
    return _MemberMax.apply(rows, idx, lhs, rhs, k, groups)


def _regathered(
    gathered: Tensor, source: Tensor, idx: Tensor, enabled: bool
) -> AbstractContextManager[None]:
    """Inside: autograd saves views of `gathered = source.index_select(0, idx)` as a recipe.

    The local attention keeps q/k/v (views of the gathered, group-major qkv, K times the rows);
    backward gathers them again from the row-wise qkv, which costs one `index_select`.
    """
    rebuild = partial(torch.index_select, source.detach(), 0, idx)
    return saved_as_recipe(gathered, rebuild, enabled=enabled)


def _row_qkv(rows: Tensor, local: tuple[nn.Module, nn.Module]) -> Tensor:
    norm3, attn1 = local
    return attn1.qkv(norm3(rows))


def _local_pool(
    x: Tensor,
    level: GeometryLevel,
    keep: Tensor | None,
    local: tuple[nn.Module, nn.Module],
    recompute: bool,
) -> Tensor:
    """Members + DropPath(attn1(norm3(members))), max-pooled per group -> `[B * G2, C]`."""
    attn1 = local[1]
    rows, k = x.view(-1, x.shape[-1]), level.size
    # LayerNorm and qkv act row by row, so computing them before the gather is the same maths on
    # 8x fewer rows, and the gathered tensor is 54 wide instead of C. The attention reads it
    # group-major (contiguous groups suit its kernel); the pooling member-major. norm3's output
    # (kept for qkv's weight gradient, C wide) is recomputed rather than saved: keeping it saves
    # about 1.4 ms per ModelNet40 block but cost 84 MiB per ScanObjectNN step (BENCHMARKS.md).
    row_qkv = _run(partial(_row_qkv, local=local), rows, recompute=recompute)
    rhs = torch.cat([attn1.proj.weight.t(), attn1.proj.bias.unsqueeze(0)], dim=0).to(rows.dtype)
    if kernels.usable(row_qkv, rows, rhs):
        # compiled CPU path: attention straight from the row-wise qkv (no gathered copy kept
        # or rebuilt), member-major output; only `lhs` is kept, by the pooling
        heads = kernels.group_attention(
            row_qkv, level.flat_idx, k, attn1.num_heads, attn1.scale, level.groups
        )
        lhs = _member_lhs(heads, keep)
        return member_max(rows, level.flat_idx, lhs, rhs, k, level.groups)
    qkv = row_qkv.index_select(0, level.group_major_idx)
    with _regathered(qkv, row_qkv, level.group_major_idx, enabled=recompute):
        attended = attn1.attend(qkv.view(-1, k, qkv.shape[-1]))
    # members + DropPath(proj(heads)) as one low-rank update of the gathered members; its left
    # factor is rebuilt in backward from the attention output, which the attention keeps anyway
    update = partial(_update_lhs, attended, keep, rows.dtype)
    lhs = update()
    with saved_as_recipe(lhs, update, enabled=recompute):
        return member_max(rows, level.flat_idx, lhs, rhs, k)


def _update_lhs(attended: Tensor, keep: Tensor | None, dtype: torch.dtype) -> Tensor:
    """`_member_lhs` from the attention output `[N, heads, K, d]`."""
    n, _, k, _ = attended.shape
    heads = attended.transpose(1, 2).reshape(n, k, -1).transpose(0, 1)  # [K, N, inner]
    return _member_lhs(heads, keep).to(dtype)


def _member_lhs(heads: Tensor, keep: Tensor | None) -> Tensor:
    """`[K * N, inner + 1]`: each member's heads `[K, N, inner]` and a ones column (for proj's
    bias), both scaled by its group's DropPath mask `keep [N, 1]`."""
    k, n, _ = heads.shape
    ones = heads.new_ones(k, n, 1)
    if keep is not None:
        ones = keep.expand(k, -1, -1)
        heads = heads * ones
    return torch.cat([heads, ones], dim=-1).view(k * n, -1)


def update_running_stats(bn: nn.BatchNorm1d, x: Tensor) -> None:
    """What a train-mode `bn(x)` does to `bn`'s running statistics, without its output."""
    if not (bn.training and bn.track_running_stats):
        return
    assert bn.running_mean is not None and bn.running_var is not None
    assert bn.num_batches_tracked is not None
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum
    factor = 1.0 / float(bn.num_batches_tracked) if momentum is None else momentum
    with torch.no_grad():
        F.batch_norm(x, bn.running_mean, bn.running_var, None, None, True, factor, bn.eps)


def normalise(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """`bn(x)` without touching running statistics (batch statistics in training)."""
    use_batch = bn.training or not bn.track_running_stats
    mean, var = (None, None) if use_batch else (bn.running_mean, bn.running_var)
    return F.batch_norm(x, mean, var, bn.weight, bn.bias, use_batch, 0.0, bn.eps)


def _propagate(
    x: Tensor,
    pooled: Tensor,
    flat_center: Tensor,
    weights: Tensor,
    num_prompt: int,
    modules: tuple[nn.Module, nn.Module, nn.Module],
    coefs: tuple[float, float],
    follow: Callable[[Tensor], Any] | None = None,
) -> Any:
    """Normalise and activate the pooled groups, add centre rows, propagate, then `adapter1`,
    then `follow` (the next block's entry) on the result."""
    bn, act, adapter1 = modules
    center_cof, propagate_cof = coefs
    b, _, c = x.shape
    vis = act(normalise(bn, pooled)).view(b, -1, c)
    # one op each (scale and sum inside): no separate passes for the products and the sums
    vis = torch.add(vis, take_rows(x, flat_center).view(b, -1, c), alpha=center_cof)
    tokens = torch.baddbmm(x[:, 1 + num_prompt :], weights, vis, alpha=propagate_cof)
    out = adapter1(torch.cat([x[:, :1], tokens], dim=1))
    return out if follow is None else follow(out)


def _run(fn, *args, recompute: bool) -> Any:  # type: ignore[no-untyped-def]
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
    follow: Callable[[Tensor], Any] | None = None,
) -> Any:
    """The geometry-aware adapter after a block's MLP branch (method.md §3.4-3.7, fixed).

    Rows = [prompts, tokens] of each sample (cls excluded). Groups of `level` index those rows;
    each group's members attend to each other through the shared `attn1` (DropPath residual),
    are max-pooled, pass `out_transform`, gain `center_cof` x their centre row, and are
    propagated back to the tokens by inverse-distance weights. `adapter1` then runs on cls and
    tokens; the prompts are dropped (they are discarded after every block, so transforming them
    would be wasted work).

    The pooling never keeps the `[K, B * G2, C]` members (`member_max`). With `recompute` on,
    two cheap row-wise segments are re-run in backward instead of keeping their C-wide
    activations: norm3 -> qkv, and everything after the max-pool: `out_transform` (its
    BatchNorm's running statistics are updated once, outside the segment), centre rows,
    propagation, adapter1, and `follow`: the next block's entry (position, prompts, norm1), so
    that the next block's input is not kept for its norm1 either. The local attention's
    gathered q/k/v are not kept: backward gathers them again from the row-wise qkv
    (`_regathered`), and the pooling's low-rank left factor is rebuilt from the attention
    output, which the attention keeps anyway. On CPU (float32) the local attention and the
    pooling run as compiled kernels (`pointpeft_cli.peft.kernels`) that read the rows in place:
    the attention keeps only the row-wise qkv, the pooling its left factor.

    Args:
        block: the block whose `out_transform` / `adapter1` / `drop_path` are used.
        x: `[B, 1 + T + G, C]` = cls, T prompts, G tokens (contiguous).
        num_prompt: T (0 in unprompted layers).
        level: second-level grouping over these rows and its propagation weights.
        local: the shared `(norm3, attn1)`.
        coefs: `(center_cof, propagate_cof)`.
        recompute: trade the segments' saved activations for a re-run in backward.
        follow: run on the `[B, 1 + G, C]` result inside the recomputed segment.

    Returns:
        `[B, 1 + G, C]`, or what `follow` returns for it.
    """
    x = x.contiguous()
    b = x.shape[0]
    keep = block.drop_path.sample_mask(b * level.groups, x)
    pooled = _local_pool(x, level, keep, local, recompute)
    bn, act = block.out_transform
    # BatchNorm's running statistics move once, here; its normalisation is recomputed with the
    # rest of the segment, so only `pooled` is kept (not also the normalised copy).
    update_running_stats(bn, pooled)
    modules = (bn, act, block.adapter1)
    fn = partial(_propagate, num_prompt=num_prompt, modules=modules, coefs=coefs, follow=follow)
    return _run(fn, x, pooled, level.flat_center, level.weights, recompute=recompute)
