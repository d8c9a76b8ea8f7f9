"""Transformer pieces shared by the Point-MAE family: patch encoder, attention, blocks, encoder.

Parameter names and shapes follow upstream Point-MAE exactly (`formats.md` §4), so official
checkpoints load without renaming. Blocks carry explicit, empty hook points that
`pointpeft_cli.peft.inject` fills; nothing is monkeypatched.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pointpeft_cli.models.linear import linear
from pointpeft_cli.models.recipes import saved_as_recipe

if TYPE_CHECKING:
    from pointpeft_cli.peft.context import PointContext


class DropPath(nn.Module):
    """Stochastic depth per sample (timm's DropPath): drop a residual branch, rescale the rest."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def sample_mask(self, rows: int, like: Tensor) -> Tensor | None:
        """A `[rows, 1]` keep/rescale mask, or None when DropPath is inactive."""
        if self.p == 0.0 or not self.training:
            return None
        keep = 1.0 - self.p
        return like.new_empty((rows, 1)).bernoulli_(keep).div_(keep)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.sample_mask(x.shape[0], x)
        return x if mask is None else x * mask.view((-1,) + (1,) * (x.dim() - 1))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout(nn.Dropout):
    """`nn.Dropout` (same keep probability, scaling and eval identity) with its mask drawn by
    `uniform_` instead of `bernoulli_`, which is 2-3x slower on CPU: the prompts' and adapters'
    dropout ran at about 6 ns per element, more than the small layers around it."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        mask = torch.empty_like(x).uniform_().ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x.mul_(mask) if self.inplace else x * mask


class Attention(nn.Module):
    """Multi-head self-attention (qkv without bias) computed by `scaled_dot_product_attention`
    (the fused flash kernel on CPU and CUDA)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, proj_bias: Tensor | None = None, residual: Tensor | None = None
    ) -> Tensor:
        """Attend over all tokens (plus `residual`, when given); `proj_bias` replaces
        `proj.bias` (frozen retrieval pass)."""
        b, n, c = x.shape
        qkv = linear(x, self.qkv.weight).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        # unbind along the q/k/v axis, then transpose each: the same strided views as
        # `permute(2, 0, 3, 1, 4).unbind(0)`, but backward stacks the three gradients straight
        # into qkv's layout; the permuted stack needed one more full copy (about 1 ms a block)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        out = F.scaled_dot_product_attention(q, k, v)  # default scale = head_dim ** -0.5
        out = out.transpose(1, 2).reshape(b, n, c)
        bias = self.proj.bias if proj_bias is None else proj_bias
        return linear(out, self.proj.weight, bias, residual=residual)


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2 (upstream uses dropout 0, so there is none)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(
        self,
        x: Tensor,
        biases: tuple[Tensor, Tensor] | None = None,
        residual: Tensor | None = None,
    ) -> Tensor:
        """Apply the MLP (plus `residual`, when given); `biases` replaces (fc1.bias, fc2.bias)
        for the frozen retrieval pass."""
        b1, b2 = (self.fc1.bias, self.fc2.bias) if biases is None else biases
        hidden = linear(x, self.fc1.weight, b1, gelu=True)
        return linear(hidden, self.fc2.weight, b2, residual=residual)

    def hidden(self, x: Tensor) -> Tensor:
        """`act(fc1(x))`, the 4x-wide activation."""
        return linear(x, self.fc1.weight, self.fc1.bias, gelu=True)

    def output(self, hidden: Tensor) -> Tensor:
        """`fc2(hidden)`."""
        return linear(hidden, self.fc2.weight, self.fc2.bias)


class Entry(NamedTuple):
    """A Point-PEFT block's input after its entry: rows (prompts inserted), `norm1` of them,
    and the number of prompt rows."""

    x: Tensor
    normed: Tensor
    num_prompt: int


def _adapter_sum(x: Tensor, h: Tensor, adapter: nn.Module, hidden: Tensor) -> Tensor:
    """`x + h + adapter(h)` from the adapter's `hidden` activation (the block's forward maths)."""
    return adapter.add_to(x + h, hidden)


class Block(nn.Module):
    """Pre-norm transformer block with Point-PEFT hook points.

    With every hook empty (the default) this is the upstream Point-MAE block:
    `x += DropPath(attn(norm1(x))); x += DropPath(mlp(norm2(x)))`.

    Hook points (filled by `pointpeft_cli.peft.inject`, names as in the original release):
        prompt_embeddings, prompt_dropout, cp_adapter: prompt tokens of a prompted layer.
        adapter: MLP-branch adapter, `x + h + adapter(h)` with `h = DropPath(mlp(norm2(x)))`.
        adapter1, out_transform: per-layer parts of the geometry-aware adapter.
    """

    #: Backbone tensors (relative names) that Point-PEFT tunes BitFit-style (method.md §7).
    TUNED_BIASES: ClassVar[tuple[str, ...]] = (
        "norm1.bias",
        "norm2.bias",
        "mlp.fc1.bias",
        "mlp.fc2.bias",
        "attn.proj.bias",
    )
    #: Hook parameters held directly by the block (not inside a PEFT module).
    PEFT_PARAMS: ClassVar[tuple[str, ...]] = ("prompt_embeddings",)

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.attn_drop_path = True
        #: Recompute norm2 -> fc1 -> GELU in backward instead of keeping the GELU input (4x the
        #: width): about a quarter of a frozen block's saved activations, for one more fc1.
        self.recompute_mlp = False
        self.register_parameter("prompt_embeddings", None)
        self.prompt_dropout: nn.Module | None = None
        self.cp_adapter: nn.Module | None = None
        self.adapter: nn.Module | None = None
        self.adapter1: nn.Module | None = None
        self.out_transform: nn.Module | None = None

    def forward(
        self,
        x: Tensor | Entry,
        ctx: PointContext | None = None,
        follow: Callable[[Tensor], Entry] | None = None,
    ) -> Tensor | Entry:
        """One block; `ctx` (centres, indices, retrieved prompts) drives the filled hooks.

        With `ctx`, `x` may be the `Entry` that the previous block's `follow` made, and
        `follow` (the next block's `enter`) runs on this block's output; the result is then
        that `Entry`.
        """
        if ctx is None:
            assert isinstance(x, Tensor)
            x = x + self.drop_path(self.attn(self.norm1(x)))
            return x + self.drop_path(self._mlp_branch(x))
        entry = x if isinstance(x, Entry) else self.enter(x, ctx)
        x, num_prompt = entry.x, entry.num_prompt
        a = self.attn(entry.normed)
        x = x + (self.drop_path(a) if self.attn_drop_path else a)
        h = self.drop_path(self._mlp_branch(x))
        kept_as: AbstractContextManager = nullcontext()
        if self.adapter is None:
            out = x + h
        else:
            hidden = self.adapter.hidden(h)
            out = _adapter_sum(x, h, self.adapter, hidden)
            # x, h and hidden stay saved (norm2, adapter.ln1, adapter.ln2), so the output that
            # the geometry adapter's recomputed segments keep is rebuilt from them in backward
            kept_as = saved_as_recipe(out, partial(_adapter_sum, x, h, self.adapter, hidden))
        if self.adapter1 is not None:
            with kept_as:
                return ctx.geometry(self, out, num_prompt, follow)
        if num_prompt:
            out = torch.cat([out[:, :1], out[:, 1 + num_prompt :]], dim=1)
        return out if follow is None else follow(out)

    def enter(self, x: Tensor, ctx: PointContext) -> Entry:
        """This block's input rows (with its prompts when it is prompted) and `norm1` of them."""
        num_prompt = 0
        if self.prompt_embeddings is not None:
            prompts = ctx.layer_prompts(self)
            num_prompt = prompts.shape[1]
            x = torch.cat([x[:, :1], prompts, x[:, 1:]], dim=1)
        return Entry(x, self.norm1(x), num_prompt)

    def _norm2_hidden(self, x: Tensor) -> Tensor:
        return self.mlp.hidden(self.norm2(x))

    def _mlp_branch(self, x: Tensor) -> Tensor:
        """`mlp(norm2(x))`; with `recompute_mlp` its hidden part is re-run in backward."""
        if not (self.recompute_mlp and torch.is_grad_enabled()):
            return self.mlp(self.norm2(x))
        hidden = checkpoint(self._norm2_hidden, x, use_reentrant=False)
        return self.mlp.output(hidden)

    def forward_frozen(self, x: Tensor, biases: dict[str, Tensor] | None = None) -> Tensor:
        """The upstream block with eval semantics (no DropPath) and no hooks.

        Args:
            x: `[B, N, C]` tokens (position already added).
            biases: replacements for `TUNED_BIASES` (the pre-trained values, so the retrieval
                query stays that of the frozen backbone while Point-PEFT tunes the live ones).
        """
        b = biases or {}
        n1, n2 = self.norm1, self.norm2
        h = F.layer_norm(x, n1.normalized_shape, n1.weight, b.get("norm1.bias", n1.bias), n1.eps)
        x = self.attn(h, proj_bias=b.get("attn.proj.bias"), residual=x)
        h = F.layer_norm(x, n2.normalized_shape, n2.weight, b.get("norm2.bias", n2.bias), n2.eps)
        fc = None
        if "mlp.fc1.bias" in b:
            fc = (b["mlp.fc1.bias"], b["mlp.fc2.bias"])
        return self.mlp(h, fc, residual=x)


class TransformerEncoder(nn.Module):
    """The block stack (`blocks.blocks.{i}`); adds `pos` before every block as upstream does.

    Hook points `attn1` / `norm3`: the geometry adapter's local attention and its norm, shared
    by all blocks (filled by `pointpeft_cli.peft.inject`).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, r) for r in rates)
        self.attn1: nn.Module | None = None
        self.norm3: nn.Module | None = None

    def forward(self, x: Tensor, pos: Tensor, ctx: PointContext | None = None) -> Tensor:
        if ctx is None:
            for block in self.blocks:
                x = block(x + pos)
            return x
        # Point-PEFT: each block's output runs into the next block's entry (position, prompts,
        # norm1) inside the block's recomputed geometry segment, so that norm1's input is
        # rebuilt in backward instead of kept.
        out: Tensor | Entry = x + pos
        for block, successor in zip(self.blocks, [*self.blocks[1:], None], strict=True):
            follow = None if successor is None else partial(_enter, successor, pos=pos, ctx=ctx)
            out = block(out, ctx, follow)
        assert isinstance(out, Tensor)
        return out


def _enter(block: Block, x: Tensor, pos: Tensor, ctx: PointContext) -> Entry:
    return block.enter(x + pos, ctx)


class PatchEncoder(nn.Module):
    """Mini-PointNet patch encoder (`encoder.first_conv` / `encoder.second_conv`).

    Upstream applies kernel-1 Conv1d layers to `[BG, C, M]`; the same weights are applied here as
    matrix products on channels-last rows, and the first `second_conv` layer is split into its
    global and local halves so the repeated global feature is multiplied once per group instead
    of once per point (same maths, about half of the encoder's cost).
    """

    def __init__(self, out_dim: int, widths: tuple[int, int, int] = (128, 256, 512)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, c1, 1), nn.BatchNorm1d(c1), nn.ReLU(inplace=True), nn.Conv1d(c1, c2, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * c2, c3, 1),
            nn.BatchNorm1d(c3),
            nn.ReLU(inplace=True),
            nn.Conv1d(c3, out_dim, 1),
        )
        self.out_dim = out_dim

    @staticmethod
    def _fold(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
        """Conv weight/bias with an eval-mode BatchNorm folded in (one pass fewer per layer)."""
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = conv.weight[..., 0] * scale.unsqueeze(1)
        return weight, (conv.bias - bn.running_mean) * scale + bn.bias

    def _running_stats(self) -> bool:
        """True when both BatchNorms normalise with their running statistics (eval mode)."""
        bns = (self.first_conv[1], self.second_conv[1])
        return not self.training and all(
            bn.track_running_stats and bn.running_var is not None for bn in bns
        )

    #: Points encoded at once by the frozen path: its `[rows, 512]` intermediates stay in cache.
    FROZEN_CHUNK_POINTS = 4096

    @staticmethod
    def _compose(outer: Tensor, inner: Tensor) -> Tensor:
        """`outer @ inner` in float64, rounded once: the same float32 bits in every process
        (float32 GEMM results can vary in the last bit with buffer alignment)."""
        return (outer.double() @ inner.double()).to(inner.dtype)

    @torch.no_grad()
    def forward_frozen(self, neighborhood: Tensor) -> Tensor:
        """`forward(..., frozen_stats=True)` without autograd, in cache-sized chunks of groups.

        Frozen weights allow exact shortcuts: BatchNorm folded into the convs; `first_conv`'s
        last layer composed with the local half of `second_conv`'s first (no nonlinearity
        between them, so the per-point product is 128 instead of 256 wide; the 256-wide
        features are still made, for the per-group max); and the last conv's bias added after
        the max-pool (max commutes with a per-channel constant). No autograd and chunks of a
        few thousand points keep every intermediate in cache.
        """
        b, g, m, _ = neighborhood.shape
        conv0, bn0, _, conv1 = self.first_conv
        conv2, bn1, _, conv3 = self.second_conv
        w0, b0 = self._fold(conv0, bn0)
        w1, b1 = conv1.weight[..., 0], conv1.bias
        w2, b2 = self._fold(conv2, bn1)
        c2 = w1.shape[0]
        w_glob = w2[:, :c2].contiguous()
        w_local = w2[:, c2:]
        # w_local @ (w1 x + b1) = (w_local @ w1) x + w_local @ b1; the constant joins b2
        w_fused = self._compose(w_local, w1)
        b_glob = b2 + self._compose(w_local, b1.unsqueeze(1)).squeeze(1)
        w3 = conv3.weight[..., 0]
        points = neighborhood.reshape(b * g, m, 3)
        out = neighborhood.new_empty(b * g, w3.shape[0])
        step = max(1, self.FROZEN_CHUNK_POINTS // m) if points.device.type == "cpu" else b * g
        for start in range(0, b * g, step):
            chunk = points[start : start + step]
            x0 = F.linear(chunk.reshape(-1, 3), w0, b0).relu_()
            x = linear(x0, w1, b1)
            glob = linear(x.view(len(chunk), m, -1).amax(1), w_glob, b_glob)
            h = linear(x0, w_fused).view(len(chunk), m, -1).add_(glob.unsqueeze(1))
            pooled = linear(h.relu_().view(-1, h.shape[-1]), w3).view(len(chunk), m, -1).amax(1)
            out[start : start + step] = pooled.add_(conv3.bias)
        return out.view(b, g, -1)

    def forward(self, neighborhood: Tensor, frozen_stats: bool = False) -> Tensor:
        """Encode `[B, G, M, 3]` centred patches into `[B, G, out_dim]` tokens.

        Without autograd, whenever the BatchNorms use their running statistics (`frozen_stats`,
        or eval mode), this is `forward_frozen`: evaluating a fully fine-tuned model then gets
        the same chunked, folded encoder as Point-PEFT and linear probing.

        Args:
            neighborhood: centred patch coordinates.
            frozen_stats: use the BatchNorm running statistics whatever the module's mode (they
                are then folded into the preceding weights).
        """
        if (frozen_stats or self._running_stats()) and not torch.is_grad_enabled():
            return self.forward_frozen(neighborhood)
        b, g, m, _ = neighborhood.shape
        conv0, bn0, _, conv1 = self.first_conv
        conv2, bn1, _, conv3 = self.second_conv
        x = neighborhood.reshape(b * g * m, 3)
        if frozen_stats:
            x = F.linear(x, *self._fold(conv0, bn0)).relu_()
        else:
            x = bn0(F.linear(x, conv0.weight[..., 0], conv0.bias)).relu_()
        x = linear(x, conv1.weight[..., 0], conv1.bias).view(b * g, m, -1)
        c2 = x.shape[-1]
        w2, b2 = self._fold(conv2, bn1) if frozen_stats else (conv2.weight[..., 0], conv2.bias)
        # upstream: conv over cat(global expanded, local); the global half is computed per group
        # contiguous halves: a column slice is a strided weight, slow on oneDNN
        glob = linear(x.max(dim=1).values, w2[:, :c2].contiguous(), b2)
        x = linear(x, w2[:, c2:].contiguous()).add_(glob.unsqueeze(1)).view(b * g * m, -1)
        x = x.relu_() if frozen_stats else bn1(x).relu_()
        x = linear(x, conv3.weight[..., 0], conv3.bias).view(b * g, m, -1)
        pooled = x.amax(dim=1) if frozen_stats else x.max(dim=1).values
        return pooled.view(b, g, -1)
