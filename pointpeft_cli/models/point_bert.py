"""Point-BERT backbone: 256-d patch encoder + `reduce_dim`, pre-trained cls token, its own head."""

from __future__ import annotations

from pointpeft_cli.models.classifier import BackboneConfig
from pointpeft_cli.models.registry import register_model


@register_model("point-bert")
def point_bert() -> BackboneConfig:
    """Upstream Point-BERT fine-tune transformer (`transformer_q` of `Point-BERT.pth`)."""
    return BackboneConfig(
        family="point-bert",
        encoder_dims=256,
        head="bert",
        cls_pretrained=True,
    )
