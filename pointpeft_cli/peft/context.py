"""PointContext: everything a Point-PEFT block needs besides its input, built once per forward.

It replaces the original's ~20 keyword arguments (centres, second-level indices, retrieved
prompts, coefficients) with one object; blocks call `layer_prompts` and `geometry` on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pointpeft_cli.errors import ConfigError
from pointpeft_cli.models.ops import (
    farthest_point_sample,
    gather_points,
    inverse_distance_weights,
    knn,
)
from pointpeft_cli.peft.adapter import geometry_update

if TYPE_CHECKING:
    from pointpeft_cli.models.transformer import Block
    from pointpeft_cli.peft.config import PointPeftConfig


@dataclass(frozen=True)
class GeometryLevel:
    """A second-level grouping over one set of row positions, and its propagation weights.

    Attributes:
        flat_idx: `[K * B * G2]` member rows of each group (nearest first, centre included),
            member-major (entry `j * B * G2 + b * G2 + g` = member j of group g of sample b),
            as row indices into the flattened block input `[cls, rows]`: `b * (R + 1) + 1 + r`
            (gathering straight from the block's tensor needs no copy without the cls row;
            member-major order makes the pooling an element-wise max over K contiguous slabs).
        group_major_idx: the same rows group-major (entry `(b * G2 + g) * K + j`).
        flat_center: `[B * G2]` the row at each group's centre, indexed the same way.
        weights: `[B, G, G2]` inverse-distance weights from group centres to the G tokens.
        groups: G2. size: K.
    """

    flat_idx: Tensor
    group_major_idx: Tensor
    flat_center: Tensor
    weights: Tensor
    groups: int
    size: int


def make_level(positions: Tensor, targets: Tensor, groups: int, size: int, eps: float):
    """FPS + kNN over `positions [B, R, 3]`; propagation weights to `targets [B, G, 3]`.

    The indices carry no gradient; the weights are differentiable w.r.t. both point sets (so
    prompt points chosen as group centres learn through the propagation).
    """
    rows = positions.shape[1]
    if groups > rows or size > rows or groups < 1:
        raise ConfigError(
            f"geometry adapter needs {groups} groups of {size} among {rows} rows",
            hint="lower peft.local_num_group / peft.local_group_size or use more groups",
        )
    center_idx = farthest_point_sample(positions.detach(), groups)
    sources = gather_points(positions, center_idx)
    _, idx = knn(positions.detach(), sources.detach(), size)
    weights = inverse_distance_weights(targets, sources, eps=eps)
    # + 1 skips each sample's cls row in the block input [cls, rows]
    offset = torch.arange(positions.shape[0], device=positions.device).unsqueeze(1) * (rows + 1) + 1
    rows_idx = idx + offset.unsqueeze(2)  # [B, G2, K]
    flat_idx = rows_idx.permute(2, 0, 1).reshape(-1)
    flat_center = (center_idx + offset).reshape(-1)
    return GeometryLevel(flat_idx, rows_idx.reshape(-1), flat_center, weights, groups, size)


@dataclass(frozen=True)
class PointContext:
    """Per-forward state shared by all Point-PEFT blocks.

    Attributes:
        cfg: the PEFT configuration (coefficients).
        plain: grouping over the token centres (unprompted layers).
        prompted: grouping over `P = cat(prompt_cor, centres)` (prompted layers).
        prompt_input: `[B, T, D]` retrieved prompt input (query, aggregate, neighbours).
        prompt_pos: `[1, T, C]` positional embedding of `prompt_cor`, or None.
        local: the shared `(norm3, attn1)` of the geometry adapter.
    """

    cfg: PointPeftConfig
    plain: GeometryLevel
    prompted: GeometryLevel
    prompt_input: Tensor
    prompt_pos: Tensor | None
    local: tuple[nn.Module, nn.Module]

    def layer_prompts(self, block: Block) -> Tensor:
        """This layer's prompt tokens `[B, T, C]`: dropout(embeddings) + cp_adapter(retrieved)."""
        assert block.prompt_embeddings is not None and block.cp_adapter is not None
        batch = self.prompt_input.shape[0]
        emb = block.prompt_embeddings.unsqueeze(0).expand(batch, -1, -1)
        if block.prompt_dropout is not None:
            emb = block.prompt_dropout(emb)  # independent mask per sample, as the original
        prompts = emb + block.cp_adapter(self.prompt_input)
        return prompts if self.prompt_pos is None else prompts + self.prompt_pos

    def geometry(
        self, block: Block, x: Tensor, num_prompt: int, follow: Callable[[Tensor], Any] | None
    ) -> Any:
        """Run the geometry-aware adapter of `block` on `x = [cls, prompts, tokens]`, then
        `follow` on its output (inside the adapter's recomputed segment)."""
        level = self.prompted if num_prompt else self.plain
        coefs = (self.cfg.center_cof, self.cfg.propagate_cof)
        return geometry_update(block, x, num_prompt, level, self.local, coefs, follow=follow)


def build_context(
    cfg: PointPeftConfig,
    center: Tensor,
    prompt_cor: Tensor,
    prompt_input: Tensor,
    prompt_pos: Tensor | None,
    local: tuple[nn.Module, nn.Module],
) -> PointContext:
    """Second-level groupings for both layer kinds, computed once per forward.

    Args:
        cfg: PEFT configuration.
        center: `[B, G, 3]` token centres.
        prompt_cor: `[T, 3]` learnable prompt points.
        prompt_input: `[B, T, D]` retrieved prompt input.
        prompt_pos: `[1, T, C]` positional embedding of the prompt points, or None.
        local: the shared `(norm3, attn1)`.
    """
    groups = cfg.local_groups(center.shape[1])
    size, eps = cfg.local_group_size, cfg.idw_eps
    plain = make_level(center, center, groups, size, eps)
    positions = torch.cat([prompt_cor.unsqueeze(0).expand(center.shape[0], -1, -1), center], 1)
    prompted = make_level(positions, center, groups, size, eps)
    return PointContext(cfg, plain, prompted, prompt_input, prompt_pos, local)
