"""The backbone's dense layers on oneDNN (`models.linear`) against `F.linear`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointpeft_cli.models import linear as lin
from pointpeft_cli.models.registry import create_model

needs_onednn = pytest.mark.skipif(
    lin.backend() != "oneDNN", reason="this PyTorch build has no usable oneDNN linear"
)


def _case(seed: int = 0, rows: tuple[int, ...] = (3, 17), n_in: int = 48, n_out: int = 40):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*rows, n_in, generator=g)
    w = torch.randn(n_out, n_in, generator=g) * 0.2
    b = torch.randn(n_out, generator=g)
    r = torch.randn(*rows, n_out, generator=g)
    return x, w, b, r


def _reference(x, w, b, r, gelu):  # type: ignore[no-untyped-def]
    out = F.linear(x, w, b)
    out = F.gelu(out) if gelu else out
    return out if r is None else r + out


@needs_onednn
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
def test_fused_forward_matches_torch(gelu: bool, with_residual: bool) -> None:
    x, w, b, r = _case()
    r = r if with_residual else None
    with torch.no_grad():
        got = lin.linear(x, w, b, gelu=gelu, residual=r)
        want = _reference(x, w, b, r, gelu)
    assert got.shape == want.shape == (3, 17, 40)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # and it ran on oneDNN, not on the fallback
    assert lin.usable(x, w)


@needs_onednn
@pytest.mark.parametrize("trainable", ["all", "frozen_weight"])
def test_gradients_match_torch(trainable: str) -> None:
    x, w, b, r = _case(1)
    grad = torch.randn(3, 17, 40, generator=torch.Generator().manual_seed(2))
    results = []
    for fn in (lin.linear, lambda x, w, b, **kw: _reference(x, w, b, kw["residual"], kw["gelu"])):
        leaves = [t.clone().requires_grad_(True) for t in (x, w, b, r)]
        if trainable == "frozen_weight":
            leaves[1].requires_grad_(False)
        out = fn(leaves[0], leaves[1], leaves[2], gelu=True, residual=leaves[3])
        out.backward(grad)
        results.append((out.detach(), [t.grad for t in leaves]))
    (got, got_grads), (want, want_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g_got, g_want in zip(got_grads, want_grads, strict=True):
        if g_want is None:
            assert g_got is None
        else:
            torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_frozen_weight_saves_no_input() -> None:
    x, w, b, _ = _case(3, rows=(64,), n_in=64, n_out=64)
    x.requires_grad_(True)
    b.requires_grad_(True)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lin.linear(x, w, b).sum().backward()
    assert all(t.data_ptr() != x.data_ptr() for t in saved)
    assert x.grad is not None and b.grad is not None

    saved.clear()
    w.requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lin.linear(x, w, b).sum()
    assert any(t.data_ptr() == x.data_ptr() for t in saved)


@needs_onednn
def test_in_place_op_on_result_is_not_a_view_update() -> None:
    x, w, b, _ = _case(4)
    w.requires_grad_(True)
    out = lin.linear(x, w, b)
    out.add_(1.0)
    # F.linear's result is not an autograd view either; a view would make backward clone it
    assert out.grad_fn is not None and "CopySlices" not in out.grad_fn.name()


def test_fallbacks_are_plain_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    x, w, b, r = _case(5)
    assert not lin.usable(x.double(), w.double())
    assert not lin.usable(x, torch.randn(40, 96)[:, :48])  # strided weight: oneDNN copies it slowly
    assert not lin.usable(x[..., :8], w[:, :8].contiguous())  # narrower than MIN_FEATURES
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lin.usable(x, w)
    monkeypatch.setenv("POINTPEFT_LINEAR", "torch")
    assert not lin.usable(x, w) and lin.backend() == "PyTorch"
    with torch.no_grad():
        assert torch.equal(lin.linear(x, w, b, gelu=True, residual=r), _reference(x, w, b, r, True))


@needs_onednn
def test_model_step_matches_the_torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Point-PEFT training step on oneDNN equals the one on PyTorch's linear layers."""
    torch.manual_seed(0)
    model = create_model("point-mae-mini", num_classes=5).train()
    model.set_memory_bank(F.normalize(torch.randn(30, model.cfg.trans_dim), dim=1))
    pts = torch.randn(4, 512, 3, generator=torch.Generator().manual_seed(6))
    results = []
    for setting in ("", "torch"):
        monkeypatch.setenv("POINTPEFT_LINEAR", setting)
        model.zero_grad(set_to_none=True)
        # dropout, DropPath. Seed 7 made one geometry max-pool winner (block 3) flip between
        # the backends on a near-tie (values 8e-7 apart), which moves the gradients by 2.6e-3:
        # a discontinuity of max, not a difference in the backends' arithmetic.
        torch.manual_seed(8)
        loss = F.cross_entropy(model(pts), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss, grads), (ref_loss, ref_grads) = results
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and grads
    for name, grad in ref_grads.items():
        scale = float(grad.abs().max())
        if scale < 1e-6:  # zero up to rounding: a bias in front of the head's BatchNorm
            assert float(grads[name].abs().max()) < 1e-6, name
            continue
        torch.testing.assert_close(grads[name] / scale, grad / scale, rtol=0, atol=1e-4, msg=name)
