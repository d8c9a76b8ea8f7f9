"""Point-PEFT's recomputed geometry-adapter segments: same numbers, fewer saved activations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pointpeft_cli.peft.adapter as adapter
from pointpeft_cli.models.registry import create_model
from pointpeft_cli.peft.config import PointPeftConfig

TINY = {
    "trans_dim": 32, "depth": 2, "num_heads": 2, "encoder_dims": 32, "encoder_widths": (16, 32, 64),
    "pos_hidden": 16, "head_hidden": 16, "pretrain_num_group": 8, "pretrain_group_size": 8,
}  # fmt: skip


def _step(recompute: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, dict, dict]:
    monkeypatch.setattr(adapter.geometry_update, "__defaults__", (recompute,))
    torch.manual_seed(0)
    model = create_model(
        "point-mae", num_classes=6, num_group=16, group_size=8,
        peft=PointPeftConfig(local_group_size=4), drop_path_rate=0.3, **TINY,
    ).train()  # fmt: skip
    model.set_memory_bank(F.normalize(torch.randn(30, 32), dim=1))
    pts = torch.randn(4, 200, 3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)  # dropout, DropPath
    logits = model(pts)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.clone() for n, b in model.named_buffers() if "out_transform" in n}
    return logits.detach(), grads, buffers


def test_recompute_is_bit_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    logits, grads, buffers = _step(True, monkeypatch)
    ref_logits, ref_grads, ref_buffers = _step(False, monkeypatch)
    assert torch.equal(logits, ref_logits)
    assert grads.keys() == ref_grads.keys()
    assert all(g is not None for g in grads.values())
    for name, grad in grads.items():
        assert torch.equal(grad, ref_grads[name]), name
    # out_transform's BatchNorm ran once per forward (not again in the recomputation)
    for name, buf in buffers.items():
        assert torch.equal(buf, ref_buffers[name]), name
        if name.endswith("num_batches_tracked"):
            assert int(buf) == 1


def _saved_bytes(recompute: bool, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(adapter.geometry_update, "__defaults__", (recompute,))
    torch.manual_seed(0)
    model = create_model(
        "point-mae", num_classes=6, num_group=32, group_size=8,
        peft=PointPeftConfig(local_group_size=8), **TINY,
    ).train()  # fmt: skip
    model.set_memory_bank(F.normalize(torch.randn(30, 32), dim=1))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(8, 400, 3))
    return sum(storages.values())


def test_recompute_saves_fewer_activations(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _saved_bytes(True, monkeypatch) < 0.85 * _saved_bytes(False, monkeypatch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_recomputed_attention_matches_sdpa(dtype: torch.dtype) -> None:
    from pointpeft_cli.models.transformer import attention

    q, k, v = (torch.randn(2, 3, 7, 8, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(2, 3, 7, 8, dtype=dtype)
    got = attention(q, k, v, recompute=True)
    want = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(got, want)
    got_grads = torch.autograd.grad(got, (q, k, v), grad)
    want_grads = torch.autograd.grad(want, (q, k, v), grad)
    assert all(torch.equal(a, b) for a, b in zip(got_grads, want_grads, strict=True))
