"""The Point-MAE pre-training model: upstream key layout, masking, loss, and learning."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pointpeft_cli.errors import ConfigError
from pointpeft_cli.models.mae_pretrain import MaskedAutoencoder, random_mask
from pointpeft_cli.models.registry import create_model, default_config
from pointpeft_cli.store.checkpoint import check_layout
from pointpeft_cli.store.layouts import load_layout

TINY = {
    "trans_dim": 32, "depth": 2, "num_heads": 2, "encoder_dims": 32,
    "encoder_widths": (16, 32, 32), "pos_hidden": 16, "pretrain_num_group": 16,
    "pretrain_group_size": 8, "drop_path_rate": 0.0,
}  # fmt: skip


def tiny_mae(**kw) -> MaskedAutoencoder:
    cfg = dataclasses.replace(default_config("point-mae-mini"), **TINY)
    return MaskedAutoencoder(cfg, decoder_depth=kw.pop("decoder_depth", 1), **kw)


def clouds(b: int = 4, n: int = 128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    return x / x.norm(dim=-1, keepdim=True)  # points on the unit sphere


def test_point_mae_state_dict_is_exactly_the_official_layout() -> None:
    model = MaskedAutoencoder(default_config("point-mae"))
    check_layout(model.state_dict(), load_layout("mae_pretrain"), "model", "mae_pretrain")


def test_mini_has_the_official_names_with_smaller_shapes() -> None:
    model = MaskedAutoencoder(default_config("point-mae-mini"), decoder_depth=4)
    layout = load_layout("mae_pretrain")
    state = model.state_dict()

    def keep(key: str) -> bool:  # the mini has 6 encoder blocks instead of 12
        parts = key.split(".")
        return not (key.startswith("MAE_encoder.blocks.blocks.") and int(parts[3]) >= 6)

    assert set(state) == {k for k in layout if keep(k)}
    assert state["mask_token"].shape == (1, 1, 192)
    assert state["increase_dim.0.weight"].shape == (96, 192, 1)


def test_encoder_weights_load_into_the_classifier_without_missing_backbone_keys() -> None:
    mae = tiny_mae()
    clf = create_model("point-mae-mini", num_classes=5, method="full", **TINY)
    report = clf.load_pretrained({"base_model": mae.encoder_state_dict()})
    assert not report.mismatched and not report.unexpected
    assert set(report.missing) <= {"cls_token", "cls_pos"} | {
        k for k in clf.state_dict() if k.startswith("cls_head_finetune.")
    }
    enc = mae.encoder_state_dict()
    for key, value in clf.state_dict().items():
        if f"MAE_encoder.{key}" in enc:
            assert torch.equal(value, enc[f"MAE_encoder.{key}"])


def test_random_mask_masks_exactly_the_ratio_per_row_and_is_seeded() -> None:
    a = random_mask(6, 64, 0.6, torch.Generator().manual_seed(1), torch.device("cpu"))
    b = random_mask(6, 64, 0.6, torch.Generator().manual_seed(1), torch.device("cpu"))
    c = random_mask(6, 64, 0.6, torch.Generator().manual_seed(2), torch.device("cpu"))
    assert a.dtype == torch.bool and a.sum(1).tolist() == [38] * 6
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(row.tolist()) for row in a}) > 1  # a different mask per sample


def _brute_chamfer_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(a.double(), b.double()) ** 2
    return (d.min(2).values.mean(1) + d.min(1).values.mean(1)).mean()


def test_loss_is_chamfer_l2_between_rebuilt_and_true_masked_patches() -> None:
    model = tiny_mae().eval()
    pts = clouds()
    with torch.no_grad():
        out = model(pts, torch.Generator().manual_seed(0))
    n_mask = int(0.6 * 16)
    assert out.mask.sum(1).tolist() == [n_mask] * 4
    assert out.rebuilt.shape == out.target.shape == (4 * n_mask, 8, 3)
    assert float(out.loss) == pytest.approx(float(_brute_chamfer_l2(out.rebuilt, out.target)),
                                            rel=1e-4)  # fmt: skip
    # the targets are centred patches of the input: every target point is an input point
    # shifted by its patch centre, so patches lie within the cloud's diameter
    assert float(out.target.norm(dim=-1).max()) <= 2.0 + 1e-5


def test_backward_reaches_encoder_decoder_and_mask_token() -> None:
    model = tiny_mae()
    model(clouds(), torch.Generator().manual_seed(0)).loss.backward()
    for name in ("mask_token", "MAE_encoder.blocks.blocks.0.attn.qkv.weight",
                 "MAE_encoder.encoder.first_conv.0.weight", "MAE_decoder.blocks.0.mlp.fc1.weight",
                 "increase_dim.0.weight", "decoder_pos_embed.0.weight"):  # fmt: skip
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_training_steps_reduce_the_reconstruction_loss() -> None:
    torch.manual_seed(0)
    model = tiny_mae(decoder_drop_path=0.0)
    pts = clouds(4, 128, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):  # the same masks every step: the loss must fall on this batch
        loss = model(pts, torch.Generator().manual_seed(0)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.95 * losses[0]


@pytest.mark.parametrize(
    ("kwargs", "overrides"),
    [({"mask_ratio": 0.0}, {}), ({"mask_ratio": 1.0}, {}), ({"decoder_depth": 0}, {}),
     ({}, {"encoder_dims": 64})],
)  # fmt: skip
def test_impossible_configs_are_config_errors(kwargs: dict, overrides: dict) -> None:
    cfg = dataclasses.replace(default_config("point-mae-mini"), **{**TINY, **overrides})
    with pytest.raises(ConfigError):
        MaskedAutoencoder(cfg, **kwargs)
