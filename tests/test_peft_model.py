"""The Point-PEFT model: batch independence, modes, the adapter kernels, paper-size step."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

import pointpeft_cli.peft.adapter as adapter_mod
from pointpeft_cli.errors import ConfigError
from pointpeft_cli.models.ops import gather_points
from pointpeft_cli.models.registry import create_model
from pointpeft_cli.peft.adapter import (
    Bottleneck,
    LocalAttention,
    MlpAdapter,
    add_linear,
    member_max,
    take_rows,
)
from pointpeft_cli.peft.config import PointPeftConfig

TINY = {
    "trans_dim": 32, "depth": 2, "num_heads": 2, "encoder_dims": 32, "encoder_widths": (16, 32, 64),
    "pos_hidden": 16, "head_hidden": 16, "pretrain_num_group": 8, "pretrain_group_size": 8,
}  # fmt: skip


def make(method: str = "point-peft", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(
        "point-mae", num_classes=6, method=method, num_group=16, group_size=8,
        peft=PointPeftConfig(local_group_size=4), **{**TINY, **kw},
    )  # fmt: skip
    model.set_memory_bank(F.normalize(torch.randn(30, 32), dim=1))
    return model


@pytest.mark.parametrize("backbone", ["point-mae", "point-bert"])
def test_batch_equals_single_samples_in_eval(backbone: str) -> None:
    torch.manual_seed(0)
    extra = {"encoder_dims": 24, "cls_pretrained": True, "head": "bert"}
    model = create_model(
        "point-mae", num_classes=6, num_group=16, group_size=8,
        peft=PointPeftConfig(local_group_size=4),
        **{**TINY, **(extra if backbone == "point-bert" else {})},
    ).eval()  # fmt: skip
    model.set_memory_bank(F.normalize(torch.randn(30, 32), dim=1))
    pts = torch.randn(5, 200, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batch = model(pts)
        single = torch.cat([model(pts[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)


def test_frozen_encoder_batchnorm_stays_in_eval() -> None:
    for method, trains in (("point-peft", False), ("linear", False), ("full", True)):
        model = make(method).train()
        assert model.encoder.first_conv[1].training is trains
        assert model.cls_head_finetune.training
        model.eval()
        assert not model.encoder.first_conv[1].training


def test_frozen_parts_build_no_graph() -> None:
    model = make().train()
    pts = torch.randn(2, 200, 3)
    emb = model.embed(pts, 16, 8, frozen=model.frozen_encoder)
    assert not emb.tokens.requires_grad and not emb.pos.requires_grad
    assert not model.retrieval_query(pts, shared=emb).requires_grad
    full = make("full")
    assert full.embed(pts, 16, 8, frozen=full.frozen_encoder).tokens.requires_grad
    linear = make("linear")
    assert not linear.forward_features(pts).requires_grad
    assert linear(pts).requires_grad  # only the head builds a graph


def test_train_mode_is_stochastic_and_eval_is_not() -> None:
    model = make()
    pts = torch.randn(4, 200, 3)
    torch.manual_seed(1)
    a = model.train()(pts)
    b = model(pts)
    assert not torch.allclose(a, b)  # DropPath, prompt/adapter dropout, head dropout
    model.eval()
    torch.testing.assert_close(model(pts), model(pts), atol=0, rtol=0)


def _member_max_case(chunk_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapter_mod, "MEMBER_CHUNK_BYTES", chunk_bytes)
    gen = torch.Generator().manual_seed(3)
    k, n, c, j = 5, 7, 6, 4
    rows = torch.randn(20, c, dtype=torch.float64, generator=gen)
    idx = torch.randint(0, 20, (k * n,), generator=gen)
    lhs = torch.randn(k * n, j, dtype=torch.float64, generator=gen)
    rhs = torch.randn(j, c, dtype=torch.float64, generator=gen)
    # a tie: group 2's members 1 and 3 read the same row with the same update
    idx[1 * n + 2] = idx[3 * n + 2]
    lhs[1 * n + 2] = lhs[3 * n + 2]
    grad = torch.randn(n, c, dtype=torch.float64, generator=gen)
    inputs = [t.clone().requires_grad_() for t in (rows, lhs, rhs)]
    got = member_max(inputs[0], idx, inputs[1], inputs[2], k)
    got_grads = torch.autograd.grad(got, inputs, grad)
    ref_inputs = [t.clone().requires_grad_() for t in (rows, lhs, rhs)]
    members = (ref_inputs[0][idx] + ref_inputs[1] @ ref_inputs[2]).view(k, n, c)
    want = members.max(dim=0).values  # the gradient goes to the first maximum, as here
    want_grads = torch.autograd.grad(want, ref_inputs, grad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)  # chunked GEMMs round alike
    assert got_grads[1][3 * n + 2].abs().sum() == 0  # the tie's gradient went to member 1 only
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_bytes", [1, 2 * 5 * 6 * 8, 2**30])
def test_member_max_matches_dense_max(chunk_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _member_max_case(chunk_bytes, monkeypatch)


def test_take_rows_matches_gather() -> None:
    rows = torch.randn(3, 11, 4)
    idx = torch.randint(0, 11, (3, 6, 2))
    flat = (idx + torch.arange(3).view(3, 1, 1) * 11).reshape(-1)
    assert torch.equal(take_rows(rows, flat).view(3, 6, 2, 4), gather_points(rows, idx))


@pytest.mark.parametrize("bias", [True, False])
def test_add_linear_is_base_plus_scaled_linear(bias: bool) -> None:
    lin = torch.nn.Linear(5, 7, bias=bias).double()
    base = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    hidden = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, 7, dtype=torch.float64)
    inputs = (base, hidden, *lin.parameters())
    got = add_linear(base, hidden, lin, 0.7)
    got_grads = torch.autograd.grad(got, inputs, grad)
    want = base + 0.7 * lin(hidden)
    want_grads = torch.autograd.grad(want, inputs, grad)
    assert got.shape == base.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_adapters_keep_their_maths_and_the_residual_dtype() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 6, 32)
    mlp_adapter = MlpAdapter(32, 8, 0.0, 0.7)
    bottleneck = Bottleneck(32, 8, 0.0, residual=True)
    hidden = mlp_adapter.hidden(x)
    expected = x + 0.7 * mlp_adapter.ln2(hidden)
    torch.testing.assert_close(mlp_adapter.add_to(x, hidden), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bottleneck(x), x + bottleneck.ln2(bottleneck.hidden(x)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # the autocast product is bfloat16; the residual stream stays float32
        assert bottleneck(x).dtype == torch.float32
        assert mlp_adapter.add_to(x, mlp_adapter.hidden(x)).dtype == torch.float32


def test_local_attention_is_the_original_attn1() -> None:
    attn = LocalAttention(32, num_heads=6, inner=18)
    x = torch.randn(4, 16, 32)
    qkv = attn.qkv(x).reshape(4, 16, 3, 6, 3).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    att = torch.softmax(q @ k.transpose(-2, -1) * 18**-0.5, dim=-1)  # scale 18^-0.5, not 3^-0.5
    want = attn.proj((att @ v).transpose(1, 2).reshape(4, 16, 18))
    torch.testing.assert_close(attn(x), want, atol=1e-6, rtol=1e-5)
    assert sum(p.numel() for p in LocalAttention(384).parameters()) == 28_032


def test_config_validation_and_unknown_keys(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError):
        PointPeftConfig(local_dim=17)
    with pytest.raises(ConfigError):
        PointPeftConfig(num_prompt_tokens=2)
    with caplog.at_level(logging.WARNING):
        cfg = PointPeftConfig.from_dict({"center_cof": 0.5, "future_knob": 1})
    assert cfg.center_cof == 0.5 and "future_knob" in caplog.text
    assert PointPeftConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="do not fit"):
        create_model(
            "point-mae", num_classes=3, num_group=8, group_size=8,
            peft=PointPeftConfig(local_group_size=16), **TINY,
        )  # fmt: skip


@pytest.mark.slow  # ~3 s on an idle 2-core machine, ~25 s when it is shared
def test_paper_size_step_batch_32() -> None:
    """Point-MAE + Point-PEFT at the ModelNet40 recipe: 32 x 1024 points, forward + backward."""
    torch.manual_seed(0)
    model = create_model("point-mae", num_classes=40, num_group=64, group_size=32).train()
    model.set_memory_bank(F.normalize(torch.randn(256, 384), dim=1))
    pts = torch.randn(32, 1024, 3)
    loss = F.cross_entropy(model(pts), torch.randint(0, 40, (32,)))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kernels_env", ["torch", "compiled"])
@pytest.mark.parametrize("prompted", [False, True])
def test_geometry_adapter_matches_the_written_out_method(
    kernels_env: str, prompted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The geometry-aware adapter against its definition (method.md §3.4-3.7, fixed), written
    out plainly: gather each group's members, members + attn1(norm3(members)), max-pool,
    out_transform, + center_cof x centre row, tokens + propagate_cof x IDW(groups), adapter1."""
    from pointpeft_cli.peft.context import build_context

    if kernels_env == "compiled":
        pytest.importorskip("numba")
        monkeypatch.delenv("POINTPEFT_KERNELS", raising=False)
    else:
        monkeypatch.setenv("POINTPEFT_KERNELS", "torch")
    torch.manual_seed(0)
    model = create_model(
        "point-mae", num_classes=6, num_group=24, group_size=8,
        peft=PointPeftConfig(local_group_size=6, center_cof=0.3, propagate_cof=0.2), **TINY,
    ).eval()  # fmt: skip
    block, local = model.blocks.blocks[0], (model.blocks.norm3, model.blocks.attn1)
    bn = block.out_transform[0]
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    center = torch.rand(3, 24, 3)
    num_prompt = model.prompt_cor.shape[0] if prompted else 0
    ctx = build_context(
        model.peft_config, center, model.prompt_cor.detach(), torch.randn(3, 10, 32), None, local
    )
    level = ctx.prompted if prompted else ctx.plain
    x = torch.randn(3, 1 + num_prompt + 24, 32, requires_grad=True)
    coefs = (0.3, 0.2)
    got = adapter_mod.geometry_update(block, x, num_prompt, level, local, coefs, recompute=False)

    rows = x.reshape(-1, 32)
    k, groups = level.size, level.groups
    members = rows[level.group_major_idx].view(3 * groups, k, 32)
    norm3, attn1 = local
    pooled = (members + attn1(norm3(members))).max(dim=1).values
    vis = block.out_transform(pooled).view(3, groups, 32)
    vis = vis + 0.3 * rows[level.flat_center].view(3, groups, 32)
    tokens = x[:, 1 + num_prompt :] + 0.2 * level.weights @ vis
    want = block.adapter1(torch.cat([x[:, :1], tokens], dim=1))

    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(want)
    got_grad = torch.autograd.grad(got, x, grad)[0]
    want_grad = torch.autograd.grad(want, x, grad)[0]
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-5)
