"""The compiled CPU kernels of the geometry adapter against the PyTorch path they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("numba")

from pointpeft_cli.models.registry import create_model
from pointpeft_cli.peft import kernels
from pointpeft_cli.peft.adapter import member_max
from pointpeft_cli.peft.config import PointPeftConfig


def _layout(batch: int, rows: int, groups: int, k: int, seed: int) -> torch.Tensor:
    """Member-major member rows `[k * batch * groups]` as `make_level` lays them out: rows of
    sample b at `b * (rows + 1) + 1 + r` (row 0 of each sample is its cls row)."""
    g = torch.Generator().manual_seed(seed)
    local = torch.stack([torch.randperm(rows, generator=g)[:k] for _ in range(batch * groups)])
    offset = torch.arange(batch).repeat_interleave(groups).unsqueeze(1) * (rows + 1) + 1
    return (local + offset).t().reshape(-1).contiguous()


def _pool_case(seed: int = 0, width: int = 7):  # type: ignore[no-untyped-def]
    batch, rows, groups, k, c = 3, 11, 4, 5, 24
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch * (rows + 1), c, generator=g)
    lhs = torch.randn(k * batch * groups, width, generator=g)
    rhs = torch.randn(width, c, generator=g) * 0.5
    grad = torch.randn(batch * groups, c, generator=g)
    return x, _layout(batch, rows, groups, k, seed), lhs, rhs, grad, k, groups


def _pool(x, idx, lhs, rhs, grad, k, groups):  # type: ignore[no-untyped-def]
    leaves = [t.clone().requires_grad_(True) for t in (x, lhs, rhs)]
    out = member_max(leaves[0], idx, leaves[1], leaves[2], k, groups)
    out.backward(grad)
    return out.detach(), [t.grad for t in leaves]


# the backward pads the width to whole 16-lane vectors: below, at and above one vector
@pytest.mark.parametrize("width", [7, 16, 19])
def test_pool_kernel_matches_the_pytorch_path(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    case = _pool_case(width=width)
    out, grads = _pool(*case)
    monkeypatch.setenv("POINTPEFT_KERNELS", "torch")
    ref, ref_grads = _pool(*case)
    x, idx, lhs, rhs, _, k, _ = case
    plain = (x[idx] + lhs @ rhs).view(k, -1, x.shape[1]).amax(0)
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pool_kernel_routes_ties_to_the_first_member() -> None:
    x, idx, lhs, rhs, grad, k, groups = _pool_case(1)
    # every member of a group is the same row with no update: all k tie in every channel
    n = idx.shape[0] // k
    idx = idx[:n].repeat(k)
    lhs = torch.zeros_like(lhs)
    values, first = kernels.pool_forward(x, idx, lhs, rhs, k, groups)
    assert torch.equal(values, x[idx[:n]])
    assert torch.equal(first, torch.zeros_like(first))
    d_rows, d_lhs, d_rhs = kernels.pool_backward(grad, first, idx, lhs, rhs, x.shape[0], k, groups)
    want = torch.zeros_like(x).index_add_(0, idx[:n], grad)
    torch.testing.assert_close(d_rows, want)
    # only member 0's rows of the left factor receive a gradient
    assert d_lhs[n:].abs().sum() == 0 and d_lhs[:n].abs().sum() > 0
    torch.testing.assert_close(d_rhs, torch.zeros_like(d_rhs))  # lhs is zero


def _attention_case(seed: int = 0):  # type: ignore[no-untyped-def]
    batch, rows, groups, k, heads, d = 2, 9, 3, 5, 2, 4
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch * (rows + 1), 3 * heads * d, generator=g)
    d_out = torch.randn(k, batch * groups, heads * d, generator=g)
    return qkv, _layout(batch, rows, groups, k, seed), k, heads, d, groups, d_out


def _sdpa(qkv, idx, k, heads, d, scale):  # type: ignore[no-untyped-def]
    n = idx.shape[0] // k
    group_major = idx.view(k, n).t().reshape(-1)
    x = qkv[group_major].view(n, k, 3, heads, d).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(x[0], x[1], x[2], scale=scale)  # [n, heads, k, d]
    return out.permute(2, 0, 1, 3).reshape(k, n, heads * d)


def test_group_attention_matches_sdpa() -> None:
    qkv, idx, k, heads, d, groups, d_out = _attention_case()
    scale = (heads * d) ** -0.5
    a = qkv.clone().requires_grad_(True)
    out = kernels.group_attention(a, idx, k, heads, scale, groups)
    out.backward(d_out)
    b = qkv.clone().requires_grad_(True)
    ref = _sdpa(b, idx, k, heads, d, scale)
    ref.backward(d_out)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)
    # cls rows (never a member) get no gradient
    cls_rows = torch.arange(0, qkv.shape[0], qkv.shape[0] // 2)
    assert a.grad[cls_rows].abs().sum() == 0


def test_group_attention_softmax_is_stable_for_large_scores() -> None:
    qkv, idx, k, heads, d, groups, _ = _attention_case(2)
    qkv = qkv * 40  # scores in the thousands: a naive exp overflows
    scale = (heads * d) ** -0.5
    out = kernels.group_attention(qkv, idx, k, heads, scale, groups)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _sdpa(qkv, idx, k, heads, d, scale), rtol=1e-4, atol=1e-3)


def _kernel_outputs():  # type: ignore[no-untyped-def]
    qkv, idx, k, heads, _, groups, d_out = _attention_case(3)
    a = qkv.clone().requires_grad_(True)
    kernels.group_attention(a, idx, k, heads, 0.3, groups).backward(d_out)
    out, grads = _pool(*_pool_case(3))
    return [a.grad, out, *grads]


def test_kernels_give_the_same_bits_at_any_thread_count() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _kernel_outputs()
        torch.set_num_threads(2)
        two = _kernel_outputs()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_kernels_apply_to_cpu_float32_only(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(2, 2)
    assert kernels.usable(x)
    assert not kernels.usable(x.double())
    assert not kernels.usable(x, x.to(torch.bfloat16))
    monkeypatch.setenv("POINTPEFT_KERNELS", "torch")
    assert not kernels.usable(x)


def test_groups_must_split_into_samples() -> None:
    x, idx, lhs, rhs, _, k, groups = _pool_case()
    with pytest.raises(ValueError, match="do not split"):
        kernels.pool_forward(x, idx, lhs, rhs, k, groups + 1)


TINY = {
    "trans_dim": 36, "depth": 2, "num_heads": 2, "encoder_dims": 36, "encoder_widths": (16, 32, 64),
    "pos_hidden": 16, "head_hidden": 16, "pretrain_num_group": 8, "pretrain_group_size": 8,
}  # fmt: skip


def _train_step(monkeypatch: pytest.MonkeyPatch, mode: str):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("POINTPEFT_KERNELS", mode)
    torch.manual_seed(0)
    model = create_model(
        "point-mae", num_classes=6, num_group=16, group_size=8, drop_path_rate=0.3,
        peft=PointPeftConfig(local_group_size=4, prompt_layers=1), **TINY,
    ).train()  # fmt: skip
    model.set_memory_bank(F.normalize(torch.randn(30, 36), dim=1))
    pts = torch.randn(4, 200, 3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)  # dropout, DropPath
    loss = F.cross_entropy(model(pts), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def test_training_step_matches_the_pytorch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    loss, grads = _train_step(monkeypatch, "numba")
    ref_loss, ref_grads = _train_step(monkeypatch, "torch")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert grad is not None, name
        scale = ref_grads[name].abs().max().clamp_min(1e-3)
        torch.testing.assert_close(grad / scale, ref_grads[name] / scale, rtol=0, atol=1e-4)


def test_warm_up_loads_the_kernels_without_touching_the_rng(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = torch.random.get_rng_state()
    assert kernels.warm_up()
    assert torch.equal(state, torch.random.get_rng_state())
    monkeypatch.setenv("POINTPEFT_KERNELS", "torch")
    assert not kernels.warm_up()


def test_loading_the_kernels_keeps_torchs_thread_count() -> None:
    # numba's thread pool sets OpenMP's thread count as it starts; in a fresh process (numba
    # starts once per process) torch must keep the 1 thread it was given
    import os
    import subprocess
    import sys

    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from pointpeft_cli.peft import kernels\n"
        "assert kernels.warm_up()\n"
        "print(torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "POINTPEFT_KERNELS"}
    env["NUMBA_NUM_THREADS"] = "2"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "1"
