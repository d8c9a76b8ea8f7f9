"""PointPeftConfig: every Point-PEFT coefficient as a named field, defaulting to the original's."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from pointpeft_cli.errors import ConfigError

log = logging.getLogger(__name__)

#: Bumped when the meaning of a field changes; stamped into exported adapter configs.
POINTPEFT_CONFIG_VERSION = 1

VARIANTS = ("point-peft",)


@dataclass(frozen=True)
class PointPeftConfig:
    """Point-PEFT hyper-parameters (method.md §3, decisions 1-4).

    Defaults are the released ScanObjectNN model's values (`PointTransformer_best`).

    Attributes:
        variant: `point-peft` = the original's evident intent with its defects fixed.
        num_prompt_tokens: prompt tokens per prompted layer (T); retrieval keeps T - 2 neighbours.
        prompt_layers: number of leading blocks that get prompts; None = half the depth (6 of 12).
        prompt_dropout: dropout on the learnable prompt embeddings.
        prompt_init_std: truncated-normal std of `prompt_embeddings` and `prompt_cor`.
        prompt_positions: add `pos_embed(prompt_cor)` to the prompt tokens. The original gives
            prompts no positional embedding, so `prompt_cor` only moves the geometry adapter's
            FPS and only its first row ever learns; with this on, every prompt point is a real
            position the attention sees and every row receives a gradient.
        cp_adapter_dim: bottleneck width of the per-layer `cp_adapter` on the retrieved prompt.
        adapter_dim: bottleneck width of the MLP-branch `adapter` (no residual).
        adapter1_dim: bottleneck width of the geometry adapter's output `adapter1` (residual).
        adapter_dropout: dropout inside every bottleneck adapter.
        adapter_scale: coefficient of the MLP-branch adapter, `x + h + s * adapter(h)` (ad_cof).
        center_cof: weight of the group-centre token feature added to the pooled group feature.
        propagate_cof: weight of the propagated group features added to every token.
        local_num_group: groups of the second-level FPS over token positions; None = G // 2.
        local_group_size: tokens per second-level group (kNN).
        local_heads: heads of the shared local attention `attn1`.
        local_dim: total q/k/v width of `attn1` (the original's 18 = 6 heads x 3).
        attn_drop_path: apply DropPath to the attention residual; the original PEFT block does
            not (only the MLP branch and the local attention are drop-pathed).
        retrieval_temperature: softmax temperature over the top-k cosine similarities.
        exclude_self: at training time skip the bank row of the sample itself (the caller passes
            each sample's bank row as `sample_index`); off = the original's behaviour.
        query_cache: an approximation, off by default: compute each training sample's
            retrieval query once (the first time it is seen) and reuse it in later epochs, which
            skips the frozen retrieval pass there (`pointpeft_cli.peft.query_cache`).
        idw_eps: added to squared distances in the inverse-distance propagation.
    """

    variant: str = "point-peft"
    num_prompt_tokens: int = 10
    prompt_layers: int | None = None
    prompt_dropout: float = 0.1
    prompt_init_std: float = 0.02
    prompt_positions: bool = True
    cp_adapter_dim: int = 8
    adapter_dim: int = 16
    adapter1_dim: int = 16
    adapter_dropout: float = 0.1
    adapter_scale: float = 0.7
    center_cof: float = 0.3
    propagate_cof: float = 0.3
    local_num_group: int | None = None
    local_group_size: int = 16
    local_heads: int = 6
    local_dim: int = 18
    attn_drop_path: bool = False
    retrieval_temperature: float = 1.0
    exclude_self: bool = False
    query_cache: bool = False
    idw_eps: float = 1e-8

    def __post_init__(self) -> None:
        problems = []
        if self.variant not in VARIANTS:
            problems.append(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.num_prompt_tokens < 3:
            problems.append("num_prompt_tokens must be >= 3 (query, aggregate, >= 1 neighbour)")
        if self.local_dim % self.local_heads:
            problems.append("local_dim must be divisible by local_heads")
        if self.retrieval_temperature <= 0:
            problems.append("retrieval_temperature must be > 0")
        for name in ("cp_adapter_dim", "adapter_dim", "adapter1_dim", "local_group_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if problems:
            raise ConfigError(f"invalid peft config: {problems[0]}", hint="fix the peft.* value")

    @property
    def retrieval_k(self) -> int:
        """Neighbours retrieved from the memory bank: T - 2 (query and aggregate fill the rest)."""
        return self.num_prompt_tokens - 2

    def num_prompt_layers(self, depth: int) -> int:
        """Prompted leading layers for a backbone of `depth` blocks."""
        layers = depth // 2 if self.prompt_layers is None else self.prompt_layers
        return max(0, min(layers, depth))

    def local_groups(self, num_group: int) -> int:
        """Second-level group count for a model with `num_group` tokens."""
        return num_group // 2 if self.local_num_group is None else self.local_num_group

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict stamped with the config version."""
        return {"pointpeft_version": POINTPEFT_CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PointPeftConfig:
        """Build from a dict; unknown keys are dropped with a warning (forward compatibility)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"pointpeft_version"})
        if unknown:
            log.warning("ignoring unknown peft config keys: %s", ", ".join(unknown))
        return cls(**{k: v for k, v in data.items() if k in known})
