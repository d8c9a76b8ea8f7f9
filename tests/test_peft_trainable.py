"""Trainable sets per method, parameter counts, one optimizer step, trainable state I/O."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointpeft_cli.errors import LayoutMismatchError
from pointpeft_cli.models.registry import create_model
from pointpeft_cli.peft.config import PointPeftConfig
from pointpeft_cli.peft.trainable import count_parameters, param_groups, peft_line

TINY = {
    "trans_dim": 32, "depth": 4, "num_heads": 2, "encoder_dims": 32, "encoder_widths": (16, 32, 64),
    "pos_hidden": 16, "head_hidden": 16, "pretrain_num_group": 8, "pretrain_group_size": 8,
}  # fmt: skip
TINY_PEFT = PointPeftConfig(local_group_size=4, num_prompt_tokens=5)


def tiny(method: str = "point-peft", classes: int = 5, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(
        "point-mae", num_classes=classes, method=method, num_group=16, group_size=8,
        peft=TINY_PEFT, **{**TINY, **kw},
    )  # fmt: skip
    if method == "point-peft":
        bank = F.normalize(torch.randn(12, TINY["trans_dim"]), dim=1)
        model.set_memory_bank(bank)
    return model


def expected_point_peft(depth: int, prompted: int, head: set[str]) -> set[str]:
    """Decision 3 written out name by name."""
    names = {"cls_token", "cls_pos", "norm.weight", "norm.bias", "prompt_cor"}
    names |= {f"blocks.attn1.{k}" for k in ("qkv.weight", "proj.weight", "proj.bias")}
    names |= {"blocks.norm3.weight", "blocks.norm3.bias"}
    lin = [f"{a}.{b}" for a in ("ln1", "ln2") for b in ("weight", "bias")]
    for i in range(depth):
        p = f"blocks.blocks.{i}."
        names |= {p + k for k in ("norm1.bias", "norm2.bias", "mlp.fc1.bias", "mlp.fc2.bias")}
        names |= {p + "attn.proj.bias", p + "out_transform.0.weight", p + "out_transform.0.bias"}
        names |= {p + "adapter." + k for k in lin} | {p + "adapter1." + k for k in lin}
        if i < prompted:
            names |= {p + "prompt_embeddings"} | {p + "cp_adapter." + k for k in lin}
    return names | head


def trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_trainable_sets_per_method() -> None:
    model = tiny()
    head = {n for n, _ in model.named_parameters() if n.startswith("cls_head_finetune.")}
    assert trainable(model) == expected_point_peft(4, 2, head)
    assert trainable(tiny("full")) == {n for n, _ in tiny("full").named_parameters()}
    assert trainable(tiny("linear")) == head
    # prompt modules exist only in the prompted layers
    assert [b.prompt_embeddings is not None for b in model.blocks.blocks] == [1, 1, 0, 0]


def _bottleneck(c: int, r: int) -> int:
    return c * r + r + r * c + c


def _mae_head(n: int) -> int:
    return (768 * 256 + 256) + 2 * 256 + (256 * 256 + 256) + 2 * 256 + (256 * n + n)


@pytest.mark.parametrize(("classes", "groups"), [(15, 128), (40, 64)])
def test_paper_size_counts(classes: int, groups: int) -> None:
    model = create_model("point-mae", num_classes=classes, num_group=groups, group_size=32)
    c, t, depth, prompted = 384, 10, 12, 6
    expected = (
        2 * c  # cls_token + cls_pos
        + 3 * t  # prompt_cor
        + prompted * t * c  # prompt_embeddings
        + prompted * _bottleneck(c, 8)  # cp_adapter
        + depth * 2 * _bottleneck(c, 16)  # adapter + adapter1
        + depth * 2 * c  # out_transform BatchNorm affine
        + (c * 3 * 18 + 18 * c + c)
        + 2 * c  # attn1 + norm3 (shared)
        + depth * (c + c + 4 * c + c + c)  # norm1/norm2/fc1/fc2/proj biases
        + 2 * c  # final norm
        + _mae_head(classes)
    )
    counts = count_parameters(model)
    assert counts.trainable == expected
    # method.md §7: the original's effective count (773,017 minus 62,268 never-trained)
    assert expected == {15: 710_749, 40: 717_174}[classes]
    assert 600_000 <= counts.trainable <= 900_000
    assert counts.trainable < 0.04 * counts.total
    assert counts.trainable_without_head == expected - _mae_head(classes)
    assert sum(counts.groups.values()) == counts.total
    assert sum(counts.trainable_groups.values()) == counts.trainable
    assert counts.trainable_groups["head"] == _mae_head(classes)
    line = peft_line(counts.trainable, counts.total)
    assert line.startswith(f"trainable params: {expected:,d} || all params: {counts.total:,d}")


def test_one_step_changes_exactly_the_trainable_set() -> None:
    model = tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    pts = torch.randn(4, 128, 3, generator=torch.Generator().manual_seed(1))
    loss = F.cross_entropy(model(pts), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert bool((model.prompt_cor.grad.abs().sum(dim=1) > 0).all())  # every prompt point learns
    opt.step()
    after = model.state_dict()
    params = dict(model.named_parameters())
    changed = {k for k in params if not torch.equal(before[k], after[k])}
    assert changed == trainable(model)
    # the frozen patch encoder's BatchNorm statistics did not move in train mode
    for k in before:
        if k.startswith("encoder.") and "running" in k:
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(
        before["blocks.blocks.0.out_transform.0.running_mean"],
        after["blocks.blocks.0.out_transform.0.running_mean"],
    )


def test_param_groups_follow_upstream_no_decay_rule() -> None:
    model = tiny()
    no_decay, decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert nd | d == trainable(model) and not nd & d
    assert {"cls_token", "norm.weight", "blocks.blocks.0.norm1.bias"} <= nd
    assert {"prompt_cor", "blocks.blocks.0.prompt_embeddings", "cls_pos"} <= d
    assert "blocks.attn1.qkv.weight" in d and "cls_head_finetune.0.weight" in d


def test_trainable_state_roundtrip_and_strictness() -> None:
    model = tiny()
    state = model.trainable_state_dict()
    assert "blocks.blocks.0.out_transform.0.running_var" in state  # buffers of trained modules
    assert "cls_head_finetune.1.running_mean" in state
    assert not any(k.startswith("encoder.") for k in state)  # frozen encoder stays out
    assert "memory_bank" not in state and not any("snapshot" in k for k in state)
    other = tiny()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.load_trainable_state_dict({k: v.clone() for k, v in state.items()})
    for k, v in other.trainable_state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(LayoutMismatchError):
        other.load_trainable_state_dict({k: v for k, v in state.items() if k != "prompt_cor"})
    wrong = tiny(classes=7).trainable_state_dict()
    with pytest.raises(LayoutMismatchError, match="shape"):
        other.load_trainable_state_dict(wrong, strict=False)
