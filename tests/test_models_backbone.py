"""Backbones against an independent reference forward from official-layout state dicts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointpeft_cli.errors import LayoutMismatchError
from pointpeft_cli.models.registry import create_model
from pointpeft_cli.store.layouts import load_layout
from tests.ckpt_factory import official_state_dict

# ----------------------------------------------------------------- reference (plain torch ops)


def ref_fps(xyz: torch.Tensor, n: int) -> torch.Tensor:
    """Textbook farthest point sampling from index 0, one sample at a time."""
    out = []
    for cloud in xyz:
        picked = [0]
        dist = ((cloud - cloud[0]) ** 2).sum(-1)
        for _ in range(n - 1):
            nxt = int(torch.argmax(dist))
            picked.append(nxt)
            dist = torch.minimum(dist, ((cloud - cloud[nxt]) ** 2).sum(-1))
        out.append(torch.tensor(picked))
    return torch.stack(out)


def ref_group(xyz: torch.Tensor, g: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = ref_fps(xyz, g)
    center = torch.stack([xyz[b, idx[b]] for b in range(xyz.shape[0])])
    d = torch.cdist(center, xyz)
    nn_idx = d.topk(m, largest=False).indices
    nb = torch.stack([xyz[b, nn_idx[b]] for b in range(xyz.shape[0])]) - center[:, :, None]
    return nb, center


def ref_encoder(sd: dict, p: str, nb: torch.Tensor) -> torch.Tensor:
    b, g, m, _ = nb.shape
    x = nb.reshape(b * g, m, 3).transpose(1, 2)

    def conv(x, k):
        return F.conv1d(x, sd[f"{p}{k}.weight"], sd[f"{p}{k}.bias"])

    def bn(x, k):
        mean, var = sd[f"{p}{k}.running_mean"], sd[f"{p}{k}.running_var"]
        w, bias = sd[f"{p}{k}.weight"], sd[f"{p}{k}.bias"]
        return (x - mean[:, None]) / torch.sqrt(var[:, None] + 1e-5) * w[:, None] + bias[:, None]

    x = conv(torch.relu(bn(conv(x, "first_conv.0"), "first_conv.1")), "first_conv.3")
    glob = x.max(dim=2, keepdim=True).values
    x = torch.cat([glob.expand(-1, -1, m), x], dim=1)
    x = conv(torch.relu(bn(conv(x, "second_conv.0"), "second_conv.1")), "second_conv.3")
    return x.max(dim=2).values.reshape(b, g, -1)


def ref_block(sd: dict, p: str, x: torch.Tensor, heads: int = 6) -> torch.Tensor:
    def ln(x, k):
        return F.layer_norm(x, x.shape[-1:], sd[f"{p}{k}.weight"], sd[f"{p}{k}.bias"])

    b, n, c = x.shape
    qkv = (ln(x, "norm1") @ sd[f"{p}attn.qkv.weight"].T).reshape(b, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    att = torch.softmax(q @ k.transpose(-1, -2) * (c // heads) ** -0.5, dim=-1)
    out = (att @ v).transpose(1, 2).reshape(b, n, c)
    x = x + out @ sd[f"{p}attn.proj.weight"].T + sd[f"{p}attn.proj.bias"]
    h = ln(x, "norm2") @ sd[f"{p}mlp.fc1.weight"].T + sd[f"{p}mlp.fc1.bias"]
    h = F.gelu(h) @ sd[f"{p}mlp.fc2.weight"].T + sd[f"{p}mlp.fc2.bias"]
    return x + h


def ref_forward(sd: dict, p: str, pts: torch.Tensor, cls: tuple | None) -> torch.Tensor:
    """Head input (with `cls`) or the pre-training eval feature (cls None: max over tokens)."""
    nb, center = ref_group(pts, 64, 32)
    x = ref_encoder(sd, p + "encoder.", nb)
    if f"{p}reduce_dim.weight" in sd:
        x = x @ sd[f"{p}reduce_dim.weight"].T + sd[f"{p}reduce_dim.bias"]
    pos = F.gelu(center @ sd[f"{p}pos_embed.0.weight"].T + sd[f"{p}pos_embed.0.bias"])
    pos = pos @ sd[f"{p}pos_embed.2.weight"].T + sd[f"{p}pos_embed.2.bias"]
    if cls is not None:
        b = pts.shape[0]
        x = torch.cat([cls[0].expand(b, -1, -1), x], dim=1)
        pos = torch.cat([cls[1].expand(b, -1, -1), pos], dim=1)
    for i in range(12):
        x = ref_block(sd, f"{p}blocks.blocks.{i}.", x + pos)
    x = F.layer_norm(x, x.shape[-1:], sd[f"{p}norm.weight"], sd[f"{p}norm.bias"])
    if cls is None:
        return x.max(dim=1).values
    return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)


def clouds(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    pts = torch.randn(2, n, 3, generator=gen) * torch.tensor([1.0, 0.6, 0.3])
    return pts / pts.norm(dim=-1).amax(dim=1, keepdim=True)[..., None]


# ------------------------------------------------------------------------------------ tests


def test_point_mae_loads_official_layout_and_matches_reference() -> None:
    state = official_state_dict("mae_pretrain", seed=3)
    model = create_model("point-mae", num_classes=15, method="full").eval()
    report = model.load_pretrained({"base_model": state, "epoch": 300})
    assert len(report.matched) == 156
    assert len(report.unexpected) == 209 - 156
    assert {"mask_token", "increase_dim.0.weight"} <= set(report.unexpected)
    assert set(report.missing) == {"cls_token", "cls_pos"} | {
        k for k in model.state_dict() if k.startswith("cls_head_finetune.")
    }
    pts = clouds(1024, seed=1)
    sd = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    cls = (model.cls_token.detach().double(), model.cls_pos.detach().double())
    with torch.no_grad():
        got = model.forward_features(pts)
        want = ref_forward(sd, "MAE_encoder.", pts.double(), cls)
        query = model.retrieval_features(pts)
        want_query = ref_forward(sd, "MAE_encoder.", pts.double(), None)
    assert got.shape == (2, 768)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(query.double(), want_query, atol=1e-5, rtol=0)


def test_point_bert_loads_transformer_q_and_matches_reference() -> None:
    state = official_state_dict("bert_pretrain", seed=5, prefix="module.")
    model = create_model("point-bert", num_classes=40, method="full").eval()
    report = model.load_pretrained({"base_model": state})
    # transformer_q minus mask_token, lm_head (2) and the pre-training cls_head (4)
    assert len(report.matched) == 167 - 7
    assert "cls_token" in report.matched and "reduce_dim.weight" in report.matched
    assert {"module.transformer_q.mask_token", "module.queue"} <= set(report.unexpected)
    assert not any(k.startswith("module.transformer_q.blocks") for k in report.unexpected)
    assert all(k.startswith("cls_head_finetune.") for k in report.missing)
    pts = clouds(1024, seed=2)
    sd = {k: v.double() for k, v in state.items() if v.is_floating_point()}
    p = "module.transformer_q."
    cls = (sd[p + "cls_token"], sd[p + "cls_pos"])
    with torch.no_grad():
        got = model.forward_features(pts)
        want = ref_forward(sd, p, pts.double(), cls)
        query = model.retrieval_features(pts)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    # Point-BERT's bank feature keeps the pre-trained cls token in the sequence
    torch.testing.assert_close(query.double(), want[:, 384:], atol=1e-5, rtol=0)


def test_wrong_shape_is_refused() -> None:
    state = official_state_dict("mae_pretrain", seed=0)
    key = "MAE_encoder.blocks.blocks.3.mlp.fc1.weight"
    state[key] = torch.zeros(1000, 384)
    model = create_model("point-mae", num_classes=15, method="full")
    before = model.blocks.blocks[0].attn.qkv.weight.clone()
    with pytest.raises(LayoutMismatchError, match="wrong shape") as err:
        model.load_pretrained(state)
    assert err.value.exit_code == 4
    assert torch.equal(model.blocks.blocks[0].attn.qkv.weight, before)  # nothing loaded


def test_missing_backbone_key_is_refused_but_head_may_be_missing() -> None:
    state = official_state_dict("mae_pretrain", seed=0)
    del state["MAE_encoder.norm.bias"]
    model = create_model("point-mae", num_classes=15, method="full")
    with pytest.raises(LayoutMismatchError, match=r"norm\.bias"):
        model.load_pretrained(state)
    bert = official_state_dict("bert_pretrain", seed=0)
    del bert["transformer_q.cls_pos"]  # pre-trained in Point-BERT: required
    with pytest.raises(LayoutMismatchError, match="cls_pos"):
        create_model("point-bert", num_classes=15, method="full").load_pretrained(bert)


def test_mae_layout_into_bert_model_is_refused() -> None:
    model = create_model("point-bert", num_classes=15, method="linear")
    with pytest.raises(LayoutMismatchError):
        model.load_pretrained(official_state_dict("mae_pretrain", seed=0))


def test_finetune_layout_keys_are_the_model_names() -> None:
    model = create_model("point-mae", num_classes=40, method="full")
    layout = load_layout("mae_finetune")
    state = model.state_dict()
    assert set(state) == set(layout)
    assert all(tuple(state[k].shape) == spec.shape for k, spec in layout.items())
    bert = create_model("point-bert", num_classes=40, method="full").state_dict()
    bert_layout = load_layout("bert_finetune")
    assert {k: tuple(v.shape) for k, v in bert.items()} == {
        k: s.shape for k, s in bert_layout.items()
    }


@pytest.mark.parametrize("chunk_points", [32, 96, 10**6])
def test_frozen_patch_encoder_matches_reference(chunk_points: int) -> None:
    """The frozen encoder (folded BN, composed convs, chunks of groups) is the same maths."""
    state = official_state_dict("mae_pretrain", seed=4)
    model = create_model("point-mae", num_classes=15, method="point-peft").eval()
    model.load_pretrained({"base_model": state})
    model.encoder.FROZEN_CHUNK_POINTS = chunk_points  # 1 group, 3 groups, all at once
    nb, _ = ref_group(clouds(512, seed=2), 16, 32)
    sd = {k: v.double() for k, v in state.items() if v.is_floating_point()}
    want = ref_encoder(sd, "MAE_encoder.encoder.", nb.double())
    with torch.no_grad():
        got = model.encoder(nb, frozen_stats=True)
    assert got.shape == (2, 16, 384)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_eval_mode_encoder_without_autograd_takes_the_frozen_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fully fine-tuned model's encoder in eval mode under no_grad uses `forward_frozen`,
    with the same values as its autograd path; in train mode it does not."""
    model = create_model("point-mae", num_classes=15, method="full")
    model.load_pretrained({"base_model": official_state_dict("mae_pretrain", seed=5)})
    enc = model.encoder
    for bn in (enc.first_conv[1], enc.second_conv[1]):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    nb, _ = ref_group(clouds(512, seed=3), 16, 32)
    enc.eval()
    want = enc(nb)  # autograd enabled: the general path
    calls: list[int] = []
    frozen = type(enc).forward_frozen
    monkeypatch.setattr(
        type(enc), "forward_frozen", lambda self, x: calls.append(1) or frozen(self, x)
    )
    with torch.no_grad():
        got = enc(nb)
    assert calls == [1]
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-5)
    enc.train()
    with torch.no_grad():
        enc(nb)
    assert calls == [1]
