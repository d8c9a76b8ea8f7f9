"""`adamw`: the fused kernel where PyTorch has one, the same updates as plain AdamW."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pointpeft_cli.engine.optim import adamw


def _groups(seed: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    weight = torch.nn.Parameter(torch.randn(8, 5, generator=g))
    bias = torch.nn.Parameter(torch.randn(8, generator=g))
    return [{"params": [bias], "weight_decay": 0.0}, {"params": [weight], "weight_decay": 0.05}]


def _train(opt: torch.optim.Optimizer, groups: list[dict[str, Any]]) -> list[torch.Tensor]:
    params = [p for group in groups for p in group["params"]]
    g = torch.Generator().manual_seed(9)
    for _ in range(4):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach().clone() for p in params]


def test_cpu_float32_is_fused_and_steps_like_plain_adamw() -> None:
    fused_groups, plain_groups = _groups(0), _groups(0)
    opt = adamw(fused_groups, lr=1e-2)
    assert opt.param_groups[0]["fused"] is True
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.05]
    got = _train(opt, fused_groups)
    want = _train(torch.optim.AdamW(plain_groups, lr=1e-2), plain_groups)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(got[1], _groups(0)[1]["params"][0])  # the weights moved


def test_falls_back_to_plain_adamw_without_a_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.optim.AdamW

    def no_fused(params: Any, **kwargs: Any) -> torch.optim.AdamW:
        if kwargs.get("fused"):
            for group in params:
                group.setdefault("fused", True)  # what a failing constructor leaves behind
            raise RuntimeError("`fused=True` requires all the params to be ... supported devices")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    opt = adamw(_groups(1), lr=1e-3)
    assert not opt.param_groups[0]["fused"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.05]
