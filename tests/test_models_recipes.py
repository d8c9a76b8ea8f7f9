"""Saved-tensor recipes: a tensor autograd would keep is rebuilt in backward, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointpeft_cli.models.recipes import saved_as_recipe


def _run(use_recipe: bool) -> tuple:
    """`gelu` of two views of `x + y`; grads, output, whether the sum was kept, recipe runs."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=gen, requires_grad=True)
    y = torch.randn(6, 5, generator=gen, requires_grad=True)
    kept: set[int] = set()
    runs = [0]

    def rebuild() -> torch.Tensor:
        runs[0] += 1
        return x + y

    def count(t: torch.Tensor) -> torch.Tensor:
        kept.add(t.untyped_storage().data_ptr())
        return t

    total = x + y  # gelu keeps its input; nothing else keeps the sum
    # an outer hook sees only what the recipe context lets through as plain tensors
    hooks = torch.autograd.graph.saved_tensors_hooks(count, lambda t: t)
    with hooks, saved_as_recipe(total, rebuild, enabled=use_recipe):
        out = F.gelu(total[:3]).sum() + F.gelu(total.t()[:, 2:]).sum()
    out.backward()
    return x.grad, y.grad, out.detach(), total.untyped_storage().data_ptr() in kept, runs[0]


def test_recipe_rebuilds_views_once_and_keeps_no_copy() -> None:
    dx, dy, out, kept, runs = _run(True)
    ref_dx, ref_dy, ref_out, ref_kept, ref_runs = _run(False)
    assert torch.equal(out, ref_out)
    assert torch.equal(dx, ref_dx) and torch.equal(dy, ref_dy)
    assert ref_kept and ref_runs == 0  # plain autograd keeps the sum
    assert not kept and runs == 1  # one rebuild served both views; the sum was not kept


def test_recipe_is_inactive_without_autograd() -> None:
    target = torch.randn(4, 3)
    with torch.no_grad(), saved_as_recipe(target, lambda: pytest.fail("must not run")):
        F.gelu(target)


@pytest.mark.parametrize("target", ["view", "transposed"])
def test_recipe_target_must_own_its_storage(target: str) -> None:
    base = torch.randn(4, 6, requires_grad=True) * 2
    tensor = base[1:] if target == "view" else base.t()
    recipe = saved_as_recipe(tensor, tensor.clone)
    with pytest.raises(ValueError, match="owning its storage"), recipe:
        pass


def test_recipe_rebuilds_under_the_forward_autocast() -> None:
    # bf16 autocast on CPU stands in for CUDA AMP: the rebuilt sum must use the bf16 matmul
    def run(use_recipe: bool) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(8, 16, generator=gen, requires_grad=True)
        w = torch.randn(16, 16, generator=gen, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            total = x + F.linear(x, w)  # float32 + bfloat16 -> float32
            with saved_as_recipe(total, lambda: x + F.linear(x, w), enabled=use_recipe):
                out = F.gelu(total).sum()
        out.backward()
        assert x.grad is not None and w.grad is not None
        return x.grad, w.grad

    (dx, dw), (ref_dx, ref_dw) = run(True), run(False)
    assert torch.equal(dx, ref_dx) and torch.equal(dw, ref_dw)
