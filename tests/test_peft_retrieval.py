"""Memory-bank retrieval against brute force, the bank buffer, and the shared frozen query."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointpeft_cli.errors import UsageError
from pointpeft_cli.models.registry import create_model
from pointpeft_cli.peft.config import PointPeftConfig
from pointpeft_cli.peft.retrieval import retrieve

TINY = {
    "trans_dim": 32, "depth": 2, "num_heads": 2, "encoder_dims": 32, "encoder_widths": (16, 32, 64),
    "pos_hidden": 16, "head_hidden": 16, "pretrain_num_group": 16, "pretrain_group_size": 8,
}  # fmt: skip


def brute_force(query, bank, k, temperature, exclude):
    """One sample at a time, sorting all cosine similarities explicitly."""
    prompts, indices = [], []
    for b in range(query.shape[0]):
        q = query[b] / query[b].norm()
        sims = [(float(q @ bank[j]), j) for j in range(bank.shape[0]) if j != exclude[b]]
        top = sorted(sims, key=lambda s: -s[0])[:k]
        w = torch.softmax(torch.tensor([s for s, _ in top]) / temperature, dim=0)
        rows = bank[[j for _, j in top]]
        agg = (w[:, None] * rows).sum(0)
        prompts.append(torch.cat([query[b][None], agg[None], rows]))
        indices.append([j for _, j in top])
    return torch.stack(prompts), torch.tensor(indices)


@pytest.mark.parametrize("temperature", [1.0, 0.1])
@pytest.mark.parametrize("use_exclude", [False, True])
def test_retrieve_matches_brute_force(temperature: float, use_exclude: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(40, 16, generator=gen), dim=1)
    query = torch.randn(5, 16, generator=gen) * 3
    query[0] = bank[7] * 2.5  # a sample that is itself in the bank
    exclude = torch.tensor([7, -1, 3, 39, 0])
    got = retrieve(query, bank, 8, temperature, exclude if use_exclude else None)
    want, idx = brute_force(query, bank, 8, temperature, exclude if use_exclude else [-1] * 5)
    assert torch.equal(got.index, idx)
    torch.testing.assert_close(got.prompt_input, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.weight.sum(1), torch.ones(5))
    assert (int(got.index[0, 0]) == 7) is not use_exclude  # self is top-1 unless excluded


def test_retrieve_rejects_small_bank() -> None:
    bank = F.normalize(torch.randn(8, 4), dim=1)
    retrieve(torch.randn(2, 4), bank, 8)
    with pytest.raises(UsageError, match="at least 8"):
        retrieve(torch.randn(2, 4), bank, 8, exclude=torch.tensor([0, 1]))


def make(method: str = "point-peft", **peft) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = PointPeftConfig(local_group_size=4, **peft)
    return create_model(
        "point-mae", num_classes=4, method=method, num_group=32, group_size=8, peft=cfg, **TINY
    )


def test_memory_bank_buffer() -> None:
    model = make()
    pts = torch.randn(2, 256, 3)
    with pytest.raises(UsageError, match="memory bank"):
        model(pts)
    with pytest.raises(UsageError, match="normalised"):
        model.set_memory_bank(torch.randn(20, 32) * 3)
    with pytest.raises(UsageError, match=r"\[N, 32\]"):
        model.set_memory_bank(F.normalize(torch.randn(20, 16), dim=1))
    model.set_memory_bank(F.normalize(torch.randn(20, 32), dim=1))
    assert "memory_bank" not in model.state_dict()
    assert model.double().memory_bank.dtype == torch.float64  # a buffer: follows .to()
    assert model.float()(pts).shape == (2, 4)


def test_shared_query_equals_standalone_frozen_pass() -> None:
    model = make().eval()
    pts = torch.randn(3, 256, 3, generator=torch.Generator().manual_seed(4))
    emb = model.embed(pts, model.num_group, model.group_size, frozen=True)
    assert emb.tokens.shape[1] == 32 and not emb.tokens.requires_grad
    shared = model.retrieval_query(pts, shared=emb)  # first 16 of the model's 32 groups
    standalone = model.retrieval_features(pts)  # its own FPS-16 grouping
    torch.testing.assert_close(shared, standalone, atol=1e-6, rtol=0)
    model.train()
    torch.testing.assert_close(model.retrieval_features(pts), standalone, atol=1e-6, rtol=0)


def test_query_stays_the_pretrained_backbones_while_biases_train() -> None:
    model = make().eval()
    model.set_memory_bank(F.normalize(torch.randn(20, 32), dim=1))
    pts = torch.randn(2, 256, 3)
    query, logits = model.retrieval_features(pts), model(pts)
    with torch.no_grad():  # what training does to the BitFit-tuned tensors
        model.blocks.blocks[0].norm1.bias.add_(0.5)
        model.blocks.blocks[1].mlp.fc2.bias.add_(0.5)
        model.norm.weight.mul_(2.0)
    torch.testing.assert_close(model.retrieval_features(pts), query, atol=0, rtol=0)
    assert not torch.allclose(model(pts), logits)
    # loading a checkpoint re-captures the frozen values
    model.load_pretrained(model.state_dict())
    assert not torch.allclose(model.retrieval_features(pts), query)


def test_exclude_self_switch() -> None:
    pts = torch.randn(3, 256, 3, generator=torch.Generator().manual_seed(2))
    for flag in (False, True):
        model = make(exclude_self=flag).eval()
        bank = torch.cat([model.retrieval_features(pts), torch.randn(9, 32)])
        model.set_memory_bank(F.normalize(bank, dim=1))
        plain = model(pts)
        excluded = model(pts, sample_index=torch.tensor([0, 1, 2]))
        assert torch.equal(plain, excluded) is not flag
