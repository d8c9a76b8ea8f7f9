"""Point-MAE masked-autoencoder pre-training model (Pang et al., ECCV 2022).

Patches (FPS centres + kNN) are embedded by the same mini-PointNet as the classifier; a random
60 % of them are masked per sample; the encoder sees only the visible tokens with their
positions; a light transformer decoder gets the encoded visible tokens plus a shared
`mask_token` at every masked position, and `increase_dim` regresses each masked patch's
`group_size` points, scored by Chamfer-L2 against the true patch.

Parameter names are the upstream `pretrain.pth` ones (`MAE_encoder.*`, `MAE_decoder.*`,
`mask_token`, `decoder_pos_embed.*`, `increase_dim.0.*`): for the `point-mae` config the state
dict is exactly the official 209-tensor layout, so a pointpeft pre-training is loaded by
`download --from` and `finetune` through the same filter as the official file.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from pointpeft_cli.errors import ConfigError
from pointpeft_cli.models.classifier import BackboneConfig, init_upstream_weights
from pointpeft_cli.models.ops import chamfer_distance, group
from pointpeft_cli.models.transformer import Block, PatchEncoder, TransformerEncoder

ENCODER_PREFIX = "MAE_encoder."


def _pos_mlp(hidden: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, dim))


class MaeOutput(NamedTuple):
    """Loss (scalar), reconstructed masked patches `[B*M, K, 3]`, their targets, and the mask."""

    loss: Tensor
    rebuilt: Tensor
    target: Tensor
    mask: Tensor


def random_mask(batch: int, groups: int, ratio: float, generator: torch.Generator | None,
                device: torch.device) -> Tensor:  # fmt: skip
    """`[B, G]` bool mask with exactly `int(ratio * G)` True (masked) entries per row."""
    num_mask = int(ratio * groups)
    order = torch.rand(batch, groups, generator=generator).argsort(dim=1).to(device)
    mask = torch.zeros(batch, groups, dtype=torch.bool, device=device)
    return mask.scatter_(1, order[:, :num_mask], True)


class MaskEncoder(nn.Module):
    """`MAE_encoder`: patch encoder, position MLP, transformer and final norm (no cls token)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.encoder = PatchEncoder(cfg.encoder_dims, cfg.encoder_widths)
        self.pos_embed = _pos_mlp(cfg.pos_hidden, cfg.trans_dim)
        self.blocks = TransformerEncoder(
            cfg.trans_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.drop_path_rate
        )
        self.norm = nn.LayerNorm(cfg.trans_dim)

    def forward(self, neighborhood: Tensor, center: Tensor, mask: Tensor) -> Tensor:
        """Encoded visible tokens `[B, V, C]` (V = unmasked groups, in group order).

        Upstream embeds every patch and then drops the masked tokens; only the visible patches
        are embedded here (same tokens, 60 % less patch-encoder work). The one difference: the
        patch encoder's training-mode BatchNorm statistics come from the visible patches, a
        random 40 % sample of the same patches.
        """
        b, _, m, _ = neighborhood.shape
        visible = self.encoder(neighborhood[~mask].reshape(b, -1, m, 3))
        pos = self.pos_embed(center[~mask].reshape(b, -1, 3))
        return self.norm(self.blocks(visible, pos))


class MaeDecoder(nn.Module):
    """`MAE_decoder`: `depth` plain blocks (position added before each) and a final norm."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor, num_last: int) -> Tensor:
        """Decode the sequence and return the normed last `num_last` tokens."""
        for block in self.blocks:
            x = block(x + pos)
        return self.norm(x[:, -num_last:])


class MaskedAutoencoder(nn.Module):
    """Point-MAE pre-training model for any Point-MAE-family `BackboneConfig`.

    Args:
        cfg: the backbone (its `pretrain_num_group` x `pretrain_group_size` grouping is used).
        mask_ratio: fraction of patches masked per sample (upstream 0.6).
        decoder_depth / decoder_heads: the decoder (upstream 4 blocks, the encoder's heads).
        decoder_drop_path: stochastic depth of the decoder (upstream 0.1).

    Raises:
        ConfigError: a config the Point-MAE pre-training cannot express.
    """

    def __init__(
        self,
        cfg: BackboneConfig,
        *,
        mask_ratio: float = 0.6,
        decoder_depth: int = 4,
        decoder_heads: int | None = None,
        decoder_drop_path: float = 0.1,
    ) -> None:
        super().__init__()
        if cfg.encoder_dims != cfg.trans_dim:
            raise ConfigError(
                f"Point-MAE pre-training needs encoder_dims == trans_dim "
                f"(got {cfg.encoder_dims} and {cfg.trans_dim})",
                hint="Point-BERT-style reduce_dim backbones are not pre-trained this way",
            )
        num_mask = int(mask_ratio * cfg.pretrain_num_group)
        if not 0 < num_mask < cfg.pretrain_num_group:
            raise ConfigError(
                f"mask ratio {mask_ratio} masks {num_mask} of {cfg.pretrain_num_group} groups",
                hint="use a ratio that masks some but not all groups (upstream: 0.6)",
            )
        if decoder_depth < 1:
            raise ConfigError(f"decoder depth must be >= 1, got {decoder_depth}")
        self.cfg, self.mask_ratio = cfg, float(mask_ratio)
        self.num_group, self.group_size = cfg.pretrain_num_group, cfg.pretrain_group_size
        c = cfg.trans_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c))
        self.MAE_encoder = MaskEncoder(cfg)
        self.decoder_pos_embed = _pos_mlp(cfg.pos_hidden, c)
        heads = decoder_heads or cfg.num_heads
        self.MAE_decoder = MaeDecoder(c, decoder_depth, heads, cfg.mlp_ratio, decoder_drop_path)
        self.increase_dim = nn.Sequential(nn.Conv1d(c, 3 * self.group_size, 1))
        self.apply(init_upstream_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, points: Tensor, generator: torch.Generator | None = None) -> MaeOutput:
        """Mask, encode, decode and score a batch of `[B, N, 3]` clouds.

        Args:
            points: xyz clouds.
            generator: CPU generator of the random mask (seeded per step for exact resume).
        """
        g = group(points, self.num_group, self.group_size)
        b, groups = g.center.shape[:2]
        mask = random_mask(b, groups, self.mask_ratio, generator, points.device)
        x_vis = self.MAE_encoder(g.neighborhood, g.center, mask)
        c = x_vis.shape[-1]
        pos_vis = self.decoder_pos_embed(g.center[~mask].reshape(b, -1, 3))
        pos_mask = self.decoder_pos_embed(g.center[mask].reshape(b, -1, 3))
        n_mask = pos_mask.shape[1]
        x_full = torch.cat([x_vis, self.mask_token.expand(b, n_mask, c)], dim=1)
        x_rec = self.MAE_decoder(x_full, torch.cat([pos_vis, pos_mask], dim=1), n_mask)
        rebuilt = self.increase_dim(x_rec.transpose(1, 2)).transpose(1, 2)
        rebuilt = rebuilt.reshape(b * n_mask, self.group_size, 3)
        target = g.neighborhood[mask].reshape(b * n_mask, self.group_size, 3)
        return MaeOutput(chamfer_distance(rebuilt, target, norm="l2"), rebuilt, target, mask)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The `MAE_encoder.*` tensors (what fine-tuning loads), upstream key names."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(ENCODER_PREFIX)}
