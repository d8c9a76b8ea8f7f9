"""Gradient buffers kept for the whole run (`engine.grads`): allocated once, before the first
forward, reused by every step of fine-tuning and pre-training, and without effect on the
numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from pointpeft_cli.engine import pretrain as pretrain_mod
from pointpeft_cli.engine import train as train_mod
from pointpeft_cli.engine.grads import keep_gradients
from pointpeft_cli.models.classifier import PointCloudClassifier
from pointpeft_cli.models.mae_pretrain import MaskedAutoencoder
from pointpeft_cli.models.registry import create_model, default_config, list_models
from tests.test_engine_e2e import _finetune
from tests.test_pretrain_engine import tiny_config


def test_keep_gradients_allocates_zeros_for_trainable_parameters_only() -> None:
    trained, frozen = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    frozen.requires_grad_(False)
    already = torch.full_like(trained.bias, 7.0)
    trained.bias.grad = already
    keep_gradients([*trained.parameters(), *frozen.parameters()])
    grad = trained.weight.grad
    assert grad is not None and grad.shape == trained.weight.shape and not grad.any()
    assert trained.bias.grad is already and bool((already == 7.0).all())
    assert frozen.weight.grad is None and frozen.bias.grad is None
    keep_gradients(trained.parameters())
    assert trained.weight.grad is grad  # a second call allocates nothing


def _dead(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("method", ["point-peft", "full", "linear"])
@pytest.mark.parametrize("backbone", list_models())
def test_every_trainable_parameter_gets_a_gradient(backbone: str, method: str) -> None:
    """The precondition of kept buffers: AdamW would still decay a parameter whose kept
    gradient stayed zero, where a `None` gradient leaves it alone."""
    torch.manual_seed(0)
    model = create_model(backbone, num_classes=5, method=method)
    if model.method == "point-peft":
        model.set_memory_bank(F.normalize(torch.randn(16, model.cfg.trans_dim), dim=-1))
    logits = model.train()(torch.randn(2, 1024, 3), sample_index=torch.arange(2))
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    assert _dead(model) == []


def test_every_pretraining_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = MaskedAutoencoder(default_config("point-mae-mini")).train()
    model(torch.randn(2, 1024, 3)).loss.backward()
    assert _dead(model) == []


Buffers = dict[int, int | None]


@pytest.fixture
def grad_buffers() -> Iterator[list[Buffers]]:
    """The address of each trainable parameter's gradient (None: no gradient), by parameter,
    at every training forward of a whole model and at every optimizer step."""
    seen: list[Buffers] = []

    def address(params: list[torch.Tensor]) -> Buffers:
        return {id(p): None if p.grad is None else p.grad.data_ptr() for p in params}

    def at_forward(module, args):  # type: ignore[no-untyped-def]
        if isinstance(module, PointCloudClassifier | MaskedAutoencoder) and module.training:
            seen.append(address([p for p in module.parameters() if p.requires_grad]))

    def at_step(optimizer, args, kwargs):  # type: ignore[no-untyped-def]
        seen.append(address([p for group in optimizer.param_groups for p in group["params"]]))

    handles = [
        register_module_forward_pre_hook(at_forward),
        register_optimizer_step_pre_hook(at_step),
    ]
    yield seen
    for handle in handles:
        handle.remove()


def _one_buffer_each(seen: list[Buffers]) -> None:
    """Every forward and step, from the first forward on, sees the same buffers."""
    assert len(seen) >= 8  # two epochs of at least two steps, each a forward and a step
    assert all(ptr is not None for ptr in seen[0].values())
    assert all(record == seen[0] for record in seen[1:])


def test_finetune_reuses_one_gradient_buffer_per_parameter(
    tmp_path: Path, grad_buffers: list[Buffers]
) -> None:
    _finetune(tmp_path / "run", "--epochs", "2")
    _one_buffer_each(grad_buffers)


@pytest.mark.usefixtures("restore_threads")
def test_pretraining_reuses_one_gradient_buffer_per_parameter(
    tmp_path: Path, grad_buffers: list[Buffers]
) -> None:
    pretrain_mod.pretrain(tiny_config(), tmp_path / "run", cache_root=tmp_path / "cache")
    _one_buffer_each(grad_buffers)


def test_kept_buffers_leave_the_numbers_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _finetune(tmp_path / "kept", "--epochs", "2")
    real_zero_grad = torch.optim.Optimizer.zero_grad

    def freed(self, set_to_none: bool = True) -> None:  # type: ignore[no-untyped-def]
        real_zero_grad(self, set_to_none=True)

    # the loop as it was: no buffers up front, gradients freed before every backward
    monkeypatch.setattr(train_mod, "keep_gradients", lambda params: None)
    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", freed)
    fresh = _finetune(tmp_path / "fresh", "--epochs", "2")
    assert kept["last"] == fresh["last"]
    a = load_file(str(tmp_path / "kept" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "fresh" / "checkpoints" / "last.safetensors"))
    assert set(a) == set(b) and all(a[k].equal(b[k]) for k in a)
