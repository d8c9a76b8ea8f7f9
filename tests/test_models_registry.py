"""The model registry: names, defaults, overrides and errors."""

from __future__ import annotations

import pytest

from pointpeft_cli.errors import ConfigError, UsageError
from pointpeft_cli.models.registry import create_model, default_config, list_models


def test_list_models() -> None:
    assert list_models() == ["point-bert", "point-mae", "point-mae-mini"]


def test_default_configs() -> None:
    mae, bert, mini = (default_config(n) for n in ("point-mae", "point-bert", "point-mae-mini"))
    assert (mae.trans_dim, mae.depth, mae.num_heads, mae.encoder_dims) == (384, 12, 6, 384)
    assert (bert.encoder_dims, bert.head, bert.cls_pretrained) == (256, "bert", True)
    assert (mini.trans_dim, mini.depth, mini.num_heads) == (192, 6, 3)
    assert mini.encoder_widths == (64, 128, 256) and mini.family == "point-mae"
    for cfg in (mae, bert, mini):
        assert (cfg.pretrain_num_group, cfg.pretrain_group_size) == (64, 32)


def test_mini_builds_and_runs_the_same_code() -> None:
    import torch
    import torch.nn.functional as F

    model = create_model("point-mae-mini", num_classes=3, depth=2).eval()
    model.set_memory_bank(F.normalize(torch.randn(16, 192), dim=1))
    assert len(model.blocks.blocks) == 2 and model.blocks.blocks[0].attn.num_heads == 3
    assert model(torch.randn(2, 512, 3)).shape == (2, 3)


def test_errors() -> None:
    with pytest.raises(UsageError, match="point-mea") as err:
        create_model("point-mea", num_classes=3)
    assert "point-mae" in (err.value.hint or "")
    with pytest.raises(ConfigError, match="widht"):
        create_model("point-mae", num_classes=3, widht=3)
    with pytest.raises(UsageError, match="method"):
        create_model("point-mae-mini", num_classes=3, method="lora")
