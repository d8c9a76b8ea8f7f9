"""inject(model, cfg): fill the backbone's explicit Point-PEFT hook points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from pointpeft_cli.errors import ConfigError
from pointpeft_cli.models.transformer import Dropout
from pointpeft_cli.peft.adapter import (
    Bottleneck,
    LocalAttention,
    MlpAdapter,
    OutTransform,
    PeftLayerNorm,
)

if TYPE_CHECKING:
    from pointpeft_cli.models.classifier import PointCloudClassifier
    from pointpeft_cli.peft.config import PointPeftConfig


@dataclass(frozen=True)
class InjectionReport:
    """Which hook points were filled.

    Attributes:
        targeted: module names that received PEFT modules or parameters.
        prompted_layers: indices of the blocks that carry prompt tokens.
    """

    targeted: list[str]
    prompted_layers: list[int]


def _prompt_param(rows: int, cols: int, std: float) -> nn.Parameter:
    param = nn.Parameter(torch.zeros(rows, cols))
    nn.init.trunc_normal_(param, std=std)
    return param


def _check(model: PointCloudClassifier, cfg: PointPeftConfig) -> None:
    groups = cfg.local_groups(model.num_group)
    if not 1 <= groups <= model.num_group or cfg.local_group_size > model.num_group:
        raise ConfigError(
            f"geometry adapter groups {groups} x {cfg.local_group_size} do not fit "
            f"{model.num_group} tokens",
            hint="lower peft.local_num_group / peft.local_group_size",
        )


def inject(model: PointCloudClassifier, cfg: PointPeftConfig) -> InjectionReport:
    """Add the Point-PEFT modules (names as in the original release) to `model` in place.

    Per block: `adapter` (MLP branch), `adapter1` + `out_transform` (geometry adapter), and in
    the first `prompt_layers` blocks `prompt_embeddings`, `prompt_dropout`, `cp_adapter`.
    Shared: `blocks.attn1`, `blocks.norm3`; model level: `prompt_cor`.
    """
    _check(model, cfg)
    dim = model.cfg.trans_dim
    blocks = model.blocks.blocks
    prompted = list(range(cfg.num_prompt_layers(len(blocks))))
    targeted: list[str] = []
    for i, block in enumerate(blocks):
        name = f"blocks.blocks.{i}"
        block.attn_drop_path = cfg.attn_drop_path
        block.adapter = MlpAdapter(dim, cfg.adapter_dim, cfg.adapter_dropout, cfg.adapter_scale)
        block.adapter1 = Bottleneck(dim, cfg.adapter1_dim, cfg.adapter_dropout, residual=True)
        block.out_transform = OutTransform(dim)
        targeted += [f"{name}.adapter", f"{name}.adapter1", f"{name}.out_transform"]
        if i in prompted:
            block.prompt_embeddings = _prompt_param(cfg.num_prompt_tokens, dim, cfg.prompt_init_std)
            block.prompt_dropout = Dropout(cfg.prompt_dropout)
            block.cp_adapter = Bottleneck(dim, cfg.cp_adapter_dim, cfg.adapter_dropout)
            targeted += [f"{name}.prompt_embeddings", f"{name}.cp_adapter"]
    model.blocks.attn1 = LocalAttention(dim, cfg.local_heads, cfg.local_dim)
    model.blocks.norm3 = PeftLayerNorm(dim)
    model.prompt_cor = _prompt_param(cfg.num_prompt_tokens, 3, cfg.prompt_init_std)
    targeted += ["blocks.attn1", "blocks.norm3", "prompt_cor"]
    return InjectionReport(targeted, prompted)
