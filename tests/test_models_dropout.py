"""`Dropout`: nn.Dropout's semantics with a faster mask draw."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pointpeft_cli.models.transformer import Dropout


def test_eval_mode_and_zero_rate_are_the_identity() -> None:
    x = torch.randn(4, 8)
    assert Dropout(0.3).eval()(x) is x
    assert Dropout(0.0).train()(x) is x


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keeps_one_minus_p_of_the_values_scaled_by_their_inverse(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = Dropout(p).train()(x)
    kept = out != 0
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1.0 / (1.0 - p)))
    # 200k Bernoulli draws: the kept fraction is within 5 standard deviations of 1 - p
    assert abs(kept.float().mean().item() - (1.0 - p)) < 5 * (p * (1 - p) / x.numel()) ** 0.5


def test_gradient_is_the_same_mask() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    out = Dropout(0.25).train()(x)
    out.sum().backward()
    assert x.grad is not None
    mask = torch.where(out != 0, 1.0 / 0.75, 0.0)
    torch.testing.assert_close(x.grad, mask)


def test_same_seed_same_mask_and_rate_one_drops_everything() -> None:
    x = torch.randn(16, 16)
    torch.manual_seed(3)
    a = Dropout(0.5).train()(x)
    torch.manual_seed(3)
    b = Dropout(0.5).train()(x)
    assert torch.equal(a, b)
    assert torch.count_nonzero(Dropout(1.0).train()(x)) == 0
    assert isinstance(Dropout(0.1), nn.Dropout)  # repr, type checks and hooks as before
