"""The optional retrieval-query cache: storage, what the model reuses, and when it does not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointpeft_cli.errors import UsageError
from pointpeft_cli.models.registry import create_model
from pointpeft_cli.peft.config import PointPeftConfig
from pointpeft_cli.peft.query_cache import QueryCache

TINY = {
    "trans_dim": 32, "depth": 2, "num_heads": 2, "encoder_dims": 32, "encoder_widths": (16, 32, 64),
    "pos_hidden": 16, "head_hidden": 16, "pretrain_num_group": 16, "pretrain_group_size": 8,
}  # fmt: skip


def make(**peft) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = PointPeftConfig(local_group_size=4, **peft)
    model = create_model(
        "point-mae", num_classes=4, method="point-peft", num_group=32, group_size=8, peft=cfg,
        **TINY,
    )  # fmt: skip
    model.set_memory_bank(F.normalize(torch.randn(20, 32, generator=torch.Generator()), dim=1))
    return model


def clouds(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 256, 3, generator=torch.Generator().manual_seed(seed))


def counting_queries(model: torch.nn.Module) -> list[int]:
    """Record the batch size of every frozen retrieval pass the model runs."""
    calls: list[int] = []
    real = model.retrieval_query

    def spy(points, shared=None):  # type: ignore[no-untyped-def]
        calls.append(points.shape[0])
        return real(points, shared=shared)

    model.retrieval_query = spy
    return calls


def test_store_lookup_grow_and_state() -> None:
    cache = QueryCache(3)
    assert cache.missing(torch.tensor([0, 5])).tolist() == [True, True]
    cache.store(torch.tensor([5, 1]), torch.tensor([[1.0, 2, 3], [4, 5, 6]], dtype=torch.float64))
    assert cache.values.shape == (6, 3) and cache.values.dtype == torch.float32 and len(cache) == 2
    assert cache.missing(torch.tensor([1, 2, 5, 9])).tolist() == [False, True, False, True]
    cache.store(torch.tensor([9]), torch.tensor([[7.0, 8, 9]]))  # grows, keeps what it had
    assert cache.lookup(torch.tensor([9, 5, 1])).tolist() == [[7, 8, 9], [1, 2, 3], [4, 5, 6]]
    other = QueryCache(3)
    other.load_state_dict(cache.state_dict())
    assert torch.equal(other.values, cache.values) and torch.equal(other.filled, cache.filled)
    with pytest.raises(UsageError, match="expected"):
        QueryCache(4).load_state_dict(cache.state_dict())
    with pytest.raises(UsageError, match="negative"):
        cache.missing(torch.tensor([-1]))


def test_off_by_default() -> None:
    assert PointPeftConfig().query_cache is False
    assert make().query_cache is None


def test_first_pass_is_exact_then_queries_are_reused() -> None:
    pts, index = clouds(4, 1), torch.tensor([3, 0, 7, 2])
    exact, cached = make().train(), make(query_cache=True).train()
    calls = counting_queries(cached)
    torch.manual_seed(5)
    want = exact(pts, sample_index=index)
    torch.manual_seed(5)
    got = cached(pts, sample_index=index)
    assert torch.equal(got, want), "a cache miss must compute the exact query"
    assert calls == [4] and len(cached.query_cache) == 4
    stored = cached.query_cache.lookup(index).clone()
    torch.testing.assert_close(stored, exact.retrieval_features(pts), atol=0, rtol=0)
    # the same samples, re-augmented: no frozen pass, the stored queries are used
    cached(clouds(4, 2), sample_index=index)
    assert calls == [4]
    assert torch.equal(cached.query_cache.lookup(index), stored)
    # a batch with two new samples runs the frozen pass on those two only
    cached(clouds(4, 3), sample_index=torch.tensor([0, 9, 3, 11]))
    assert calls == [4, 2] and len(cached.query_cache) == 6


def test_later_epochs_retrieve_with_the_first_seen_query() -> None:
    first, later, index = clouds(2, 1), clouds(2, 8), torch.tensor([0, 1])
    model = make(query_cache=True).train()
    model(first, sample_index=index)
    stored = model.retrieval_features(first)

    def run(**kwargs):  # type: ignore[no-untyped-def]
        torch.manual_seed(11)  # same prompt dropout and DropPath draws in every run
        return model(later, **kwargs)

    reused = run(sample_index=index)
    exact = run()  # no sample index: the exact query of `later`
    real = model.retrieval_query
    model.retrieval_query = lambda points, shared=None: stored  # type: ignore[method-assign]
    assert torch.equal(reused, run()), "the cached path must be the method fed the stored query"
    model.retrieval_query = real  # type: ignore[method-assign]
    assert not torch.equal(reused, exact)


def test_evaluation_never_reads_the_cache() -> None:
    model = make(query_cache=True).train()
    index = torch.tensor([0, 1])
    model(clouds(2, 1), sample_index=index)
    model.eval()
    calls = counting_queries(model)
    model(clouds(2, 8), sample_index=index)
    assert calls == [2]


def test_without_sample_index_the_query_is_computed() -> None:
    cached = make(query_cache=True).train()
    calls = counting_queries(cached)
    cached(clouds(2, 1))
    cached(clouds(2, 1))
    assert calls == [2, 2] and len(cached.query_cache) == 0
