"""Point-MAE backbones: `point-mae` (official weights) and `point-mae-mini` (same code, smaller)."""

from __future__ import annotations

from pointpeft_cli.models.classifier import BackboneConfig
from pointpeft_cli.models.registry import register_model


@register_model("point-mae")
def point_mae() -> BackboneConfig:
    """Upstream Point-MAE: width 384, 12 blocks, 6 heads, MLP 1536, encoder 384, 64 x 32."""
    return BackboneConfig(family="point-mae")


@register_model("point-mae-mini")
def point_mae_mini() -> BackboneConfig:
    """The embedded default: the Point-MAE architecture at half width and half depth.

    Sized so that pre-training on 2 CPU cores takes well under an hour and the default
    fine-tuning a few minutes. The class head's hidden width (48, upstream 256 for width 384)
    keeps Point-PEFT under 5 % trainable parameters (about 4.8 % for 12 classes); pre-training
    does not use the head, so it does not change the shipped weights.
    """
    return BackboneConfig(
        family="point-mae",
        trans_dim=192,
        depth=6,
        num_heads=3,
        encoder_dims=192,
        encoder_widths=(64, 128, 256),
        pos_hidden=64,
        head_hidden=48,
    )
