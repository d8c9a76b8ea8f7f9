"""PointCloudClassifier: a Point-MAE-family backbone, optional Point-PEFT, and the class head.

Parameter names are the upstream fine-tune layout (`encoder.*`, `pos_embed.*`, `blocks.blocks.*`,
`norm.*`, `cls_token`, `cls_pos`, `cls_head_finetune.*`; Point-BERT adds `reduce_dim.*`), and the
Point-PEFT names are the original release's, so released checkpoints map without renaming.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointpeft_cli.errors import UsageError
from pointpeft_cli.models.checkpoint import (
    FILTERS,
    LoadReport,
    build_report,
    check_backbone,
    unwrap_checkpoint,
)
from pointpeft_cli.models.ops import group
from pointpeft_cli.models.transformer import PatchEncoder, TransformerEncoder
from pointpeft_cli.peft import trainable
from pointpeft_cli.peft.config import PointPeftConfig
from pointpeft_cli.peft.context import PointContext, build_context
from pointpeft_cli.peft.inject import inject
from pointpeft_cli.peft.query_cache import QueryCache
from pointpeft_cli.peft.retrieval import check_bank, retrieve
from pointpeft_cli.peft.snapshot import FrozenSnapshot

METHODS = ("point-peft", "full", "linear")


@dataclass(frozen=True)
class BackboneConfig:
    """Architecture of one backbone family member; every width is a field.

    Attributes:
        family: checkpoint family (`point-mae` or `point-bert`), picks the key filter.
        trans_dim / depth / num_heads / mlp_ratio / drop_path_rate: the transformer.
        encoder_dims: patch-encoder output; differs from trans_dim only with `reduce_dim`.
        encoder_widths: the patch encoder's hidden channels (first conv x2, second conv).
        pos_hidden: hidden width of the position MLP.
        pretrain_num_group / pretrain_group_size: the grouping the backbone was pre-trained
            with; the retrieval query always uses it (decision 4).
        head: `mae` (two BN hidden layers) or `bert` (one hidden layer, no BN).
        head_hidden / head_dropout: the class head.
        cls_pretrained: the checkpoint carries cls_token/cls_pos (Point-BERT); they are then
            required on load and kept in the retrieval sequence.
    """

    family: str = "point-mae"
    trans_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    encoder_dims: int = 384
    encoder_widths: tuple[int, int, int] = (128, 256, 512)
    pos_hidden: int = 128
    pretrain_num_group: int = 64
    pretrain_group_size: int = 32
    head: str = "mae"
    head_hidden: int = 256
    head_dropout: float = 0.5
    cls_pretrained: bool = False


class Embedded(NamedTuple):
    """Patch tokens `[B, G, C]`, their position embeddings `[B, G, C]` and centres `[B, G, 3]`."""

    tokens: Tensor
    pos: Tensor
    center: Tensor


def build_head(cfg: BackboneConfig, num_classes: int) -> nn.Sequential:
    """`cls_head_finetune` as upstream builds it for the family (state-dict indices kept)."""
    d, h, p = 2 * cfg.trans_dim, cfg.head_hidden, cfg.head_dropout
    if cfg.head == "bert":
        return nn.Sequential(
            nn.Linear(d, h), nn.ReLU(inplace=True), nn.Dropout(p), nn.Linear(h, num_classes)
        )
    return nn.Sequential(
        nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(p),
        nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(p),
        nn.Linear(h, num_classes),
    )  # fmt: skip


def init_upstream_weights(m: nn.Module) -> None:
    """Upstream `_init_weights` (only matters for training from scratch; ckpts overwrite it)."""
    if isinstance(m, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class PointCloudClassifier(nn.Module):
    """Backbone + optional Point-PEFT + head, for methods `point-peft`, `full` and `linear`.

    Decision (BatchNorm of a frozen backbone): under `point-peft` and `linear` the patch
    encoder's BatchNorm layers stay in eval mode even in `train()`, so a frozen backbone really
    is frozen (running statistics do not drift), the main pass's patch tokens are exactly those
    of the retrieval pass (which lets the two share the encoder), and an exported adapter is
    self-contained. DropPath and Dropout follow the module mode as upstream.
    """

    TUNED_WITH_PEFT = ("norm.weight", "norm.bias", "cls_token", "cls_pos")
    PEFT_PARAMS = ("prompt_cor",)
    HEAD = "cls_head_finetune"

    def __init__(
        self,
        cfg: BackboneConfig,
        *,
        num_classes: int,
        method: str = "point-peft",
        num_group: int | None = None,
        group_size: int | None = None,
        peft: PointPeftConfig | None = None,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise UsageError(f"unknown method {method!r}", hint=f"use one of {', '.join(METHODS)}")
        if num_classes < 1:
            raise UsageError(f"num_classes must be >= 1, got {num_classes}")
        self.cfg, self.method, self.num_classes = cfg, method, num_classes
        self.num_group = num_group or cfg.pretrain_num_group
        self.group_size = group_size or cfg.pretrain_group_size
        c = cfg.trans_dim
        self.encoder = PatchEncoder(cfg.encoder_dims, cfg.encoder_widths)
        if cfg.encoder_dims != c:
            self.reduce_dim = nn.Linear(cfg.encoder_dims, c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, c))
        self.pos_embed = nn.Sequential(
            nn.Linear(3, cfg.pos_hidden), nn.GELU(), nn.Linear(cfg.pos_hidden, c)
        )
        self.blocks = TransformerEncoder(
            c, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.drop_path_rate
        )
        self.norm = nn.LayerNorm(c)
        self.apply(init_upstream_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)
        self.cls_head_finetune = build_head(cfg, num_classes)
        self.peft_config: PointPeftConfig | None = None
        self.register_parameter("prompt_cor", None)
        self.register_buffer("memory_bank", None, persistent=False)
        self.snapshot: FrozenSnapshot | None = None
        self.query_cache: QueryCache | None = None
        if method == "point-peft":
            self.peft_config = peft or PointPeftConfig()
            inject(self, self.peft_config)
            self.snapshot = FrozenSnapshot(self.frozen_tensors())
            if self.peft_config.query_cache:
                self.query_cache = QueryCache(self.cfg.trans_dim)
        trainable.apply_method(self, method)
        self.train()

    # ----------------------------------------------------------------- structure
    @property
    def frozen_encoder(self) -> bool:
        """The patch encoder, reduce_dim and pos_embed are frozen (run without autograd)."""
        return self.method != "full"

    def frozen_tensors(self) -> dict[str, Tensor]:
        """The live tensors the retrieval pass needs that Point-PEFT tunes (snapshot targets)."""
        names = ["norm.weight", "norm.bias"]
        if self.cfg.cls_pretrained:
            names += ["cls_token", "cls_pos"]
        for i, block in enumerate(self.blocks.blocks):
            names += [f"blocks.blocks.{i}.{n}" for n in block.TUNED_BIASES]
        params = dict(self.named_parameters())
        return {n: params[n] for n in names}

    def train(self, mode: bool = True) -> PointCloudClassifier:
        """Set the mode; a frozen patch encoder's BatchNorm stays in eval (class docstring)."""
        super().train(mode)
        if self.frozen_encoder:
            self.encoder.eval()
        return self

    # ------------------------------------------------------------------ forward
    def embed(self, points: Tensor, num_group: int, group_size: int, frozen: bool) -> Embedded:
        """Group `[B, N, 3]` points and encode the patches (no autograd when `frozen`)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            g = group(points, num_group, group_size)
            tokens = self.encoder(g.neighborhood, frozen_stats=frozen)
            if hasattr(self, "reduce_dim"):
                tokens = self.reduce_dim(tokens)
            return Embedded(tokens, self.pos_embed(g.center), g.center)

    @torch.no_grad()
    def retrieval_query(self, points: Tensor, shared: Embedded | None = None) -> Tensor:
        """The frozen pre-PEFT feature `[B, C]` (decision 4), eval semantics, no autograd.

        With the backbone's pre-training grouping (64 x 32 by default) whatever grouping the
        model uses. When `shared` holds this model's own frozen embedding and the groupings are
        compatible, its first groups are reused: FPS from index 0 is prefix-consistent and kNN is
        per centre, so they are exactly the pre-training grouping's patches.
        """
        g0, m0 = self.cfg.pretrain_num_group, self.cfg.pretrain_group_size
        usable = (
            shared is not None
            and self.frozen_encoder
            and self.group_size == m0
            and self.num_group >= g0
        )
        if usable:
            tokens, pos = shared.tokens[:, :g0], shared.pos[:, :g0]
        else:
            emb = self.embed(points, g0, m0, frozen=True)
            tokens, pos = emb.tokens, emb.pos
        return self._frozen_feature(tokens, pos)

    def _frozen_feature(self, tokens: Tensor, pos: Tensor) -> Tensor:
        live = self.frozen_tensors()
        t = live if self.snapshot is None else self.snapshot.values()
        x, p = tokens, pos
        if self.cfg.cls_pretrained:
            b = tokens.shape[0]
            x = torch.cat([t["cls_token"].expand(b, -1, -1), x], dim=1)
            p = torch.cat([t["cls_pos"].expand(b, -1, -1), p], dim=1)
        for i, block in enumerate(self.blocks.blocks):
            prefix = f"blocks.blocks.{i}."
            x = block.forward_frozen(x + p, {n: t[prefix + n] for n in block.TUNED_BIASES})
        norm = self.norm
        x = F.layer_norm(x, norm.normalized_shape, t["norm.weight"], t["norm.bias"], norm.eps)
        if self.cfg.cls_pretrained:
            x = x[:, 1:]
        return x.max(dim=1).values

    def retrieval_features(self, points: Tensor) -> Tensor:
        """Memory-bank feature `[B, C]` of each cloud (the query retrieval uses)."""
        return self.retrieval_query(points)

    def _context(self, points: Tensor, emb: Embedded, sample_index: Tensor | None) -> PointContext:
        cfg = self.peft_config
        assert cfg is not None and self.prompt_cor is not None
        bank = check_bank(self.memory_bank, self.cfg.trans_dim)
        query = self._query(points, emb, sample_index)
        exclude = sample_index if cfg.exclude_self else None
        got = retrieve(query, bank, cfg.retrieval_k, cfg.retrieval_temperature, exclude)
        prompt_pos = self.pos_embed(self.prompt_cor).unsqueeze(0) if cfg.prompt_positions else None
        local = (self.blocks.norm3, self.blocks.attn1)
        return build_context(cfg, emb.center, self.prompt_cor, got.prompt_input, prompt_pos, local)

    def _query(self, points: Tensor, emb: Embedded, sample_index: Tensor | None) -> Tensor:
        """The retrieval query; from the query cache for training samples when it is on."""
        cache = self.query_cache
        if cache is None or sample_index is None or not self.training:
            return self.retrieval_query(points, shared=emb)
        miss = cache.missing(sample_index)
        if bool(miss.any()):
            part = Embedded(*(t[miss] for t in emb))
            cache.store(sample_index[miss], self.retrieval_query(points[miss], shared=part))
        return cache.lookup(sample_index).to(emb.tokens.dtype)

    def forward_features(self, points: Tensor, *, sample_index: Tensor | None = None) -> Tensor:
        """Head input `[B, 2C]` = concat(cls, max over tokens) after the final norm."""
        emb = self.embed(points, self.num_group, self.group_size, frozen=self.frozen_encoder)
        ctx = None if self.peft_config is None else self._context(points, emb, sample_index)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.method != "linear"):
            b = points.shape[0]
            x = torch.cat([self.cls_token.expand(b, -1, -1), emb.tokens], dim=1)
            pos = torch.cat([self.cls_pos.expand(b, -1, -1), emb.pos], dim=1)
            x = self.norm(self.blocks(x, pos, ctx))
            return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)

    def forward(self, points: Tensor, *, sample_index: Tensor | None = None) -> Tensor:
        """Logits `[B, num_classes]` for clouds `[B, N, 3]`.

        Args:
            points: xyz clouds.
            sample_index: `[B]` row of each sample in the training split, which is its
                memory-bank row (-1 = none); used in training by `peft.exclude_self` and
                `peft.query_cache`, ignored otherwise.
        """
        return self.cls_head_finetune(self.forward_features(points, sample_index=sample_index))

    # ---------------------------------------------------------------- state I/O
    def set_recompute_mlp(self, enabled: bool) -> None:
        """Recompute every block's MLP hidden activation in backward (less memory, one more
        fc1 per block; the numbers are unchanged)."""
        for block in self.blocks.blocks:
            block.recompute_mlp = enabled

    def set_memory_bank(self, features: Tensor) -> None:
        """Register `[N, C]` L2-normalised bank rows as a non-persistent buffer."""
        bank = check_bank(features, self.cfg.trans_dim).detach()
        if not bool(torch.isfinite(bank).all()):
            raise UsageError("memory bank holds NaN or Inf values", hint="rebuild it")
        norms = bank.float().norm(dim=1)
        if bank.shape[0] and float((norms - 1).abs().max()) > 1e-3:
            raise UsageError(
                "memory bank rows are not L2-normalised",
                hint="normalise each row: features / features.norm(dim=1, keepdim=True)",
            )
        device = self.cls_token.device
        self.memory_bank = bank.to(device=device, dtype=torch.float32).contiguous()

    def checkpoint_report(self, state: Any, source: str = "checkpoint") -> LoadReport:
        """The key report of loading `state` (a container or flat dict), without loading."""
        flat = unwrap_checkpoint(state, source)
        return build_report(self.state_dict(), flat, FILTERS[self.cfg.family](flat))[0]

    def load_pretrained(self, state: Any, source: str = "checkpoint") -> LoadReport:
        """Load an official pre-trained checkpoint through the family filter.

        Raises:
            LayoutMismatchError: a backbone key is missing or has the wrong shape (only the
                head, PEFT modules and, for Point-MAE, cls_token/cls_pos may be missing).
        """
        flat = unwrap_checkpoint(state, source)
        report, tensors = build_report(self.state_dict(), flat, FILTERS[self.cfg.family](flat))
        check_backbone(report, trainable.backbone_keys(self), source)
        self.load_state_dict(tensors, strict=False)
        if self.snapshot is not None:
            self.snapshot.capture(self.frozen_tensors())
        return report

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Trainable parameters plus the persistent buffers of modules that train."""
        return trainable.trainable_state_dict(self)

    def load_trainable_state_dict(self, state: dict[str, Tensor], strict: bool = True) -> None:
        """Load what `trainable_state_dict` saved (exact key set when `strict`)."""
        trainable.load_trainable_state_dict(self, state, strict=strict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready architecture description (backbone config, grouping, method, PEFT)."""
        return {
            "backbone": dataclasses.asdict(self.cfg),
            "method": self.method,
            "num_classes": self.num_classes,
            "num_group": self.num_group,
            "group_size": self.group_size,
            "peft": None if self.peft_config is None else self.peft_config.to_dict(),
        }
