"""Point ops against brute-force references written here (numpy loops on small clouds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointpeft_cli.errors import DataError
from pointpeft_cli.models import ops


def _cloud(batch: int, num: int, seed: int, dups: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Random clouds; the last ``dups`` points of each copy earlier ones (exact duplicates)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, num, 3, generator=gen, dtype=torch.float64) * 2 - 1
    if dups:
        src = torch.randint(0, num - dups, (batch, dups), generator=gen)
        x[:, num - dups :] = torch.gather(x, 1, src.unsqueeze(-1).expand(-1, -1, 3))
    return x.to(dtype)


def _sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distance between ``a [..., 3]`` and ``b [..., 3]``, summed x, y, z in order."""
    return ((a[..., 0] - b[..., 0]) ** 2 + (a[..., 1] - b[..., 1]) ** 2) + (
        a[..., 2] - b[..., 2]
    ) ** 2


def _ref_fps(pts: np.ndarray, n: int, skip_near_origin: bool = False) -> list[int]:
    picks = [0]
    mind = np.full(len(pts), np.inf, dtype=pts.dtype)
    near = _sq(pts, np.zeros(3, pts.dtype)) <= 1e-3
    for _ in range(n - 1):
        mind = np.minimum(mind, _sq(pts, pts[picks[-1]]))
        score = np.where(near, -1, mind) if skip_near_origin else mind
        best = max(range(len(pts)), key=lambda j: (score[j], -j))  # largest, then lowest index
        picks.append(best)
    return picks


def _ref_knn(ref: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx, dist = [], []
    for q in query:
        d = _sq(ref, q)
        order = sorted(range(len(ref)), key=lambda j: (d[j], j))[:k]
        idx.append(order)
        dist.append(d[order])
    return np.array(dist), np.array(idx)


# --- farthest point sampling


@pytest.mark.parametrize(("num", "n", "dups"), [(50, 50, 0), (120, 40, 30), (64, 64, 20)])
def test_fps_matches_reference(num: int, n: int, dups: int) -> None:
    x = _cloud(3, num, seed=num + n, dups=dups)
    got = ops.farthest_point_sample(x, n)
    assert got.dtype == torch.long and got.shape == (3, n)
    for b in range(3):
        assert got[b].tolist() == _ref_fps(x[b].numpy(), n)


def test_fps_duplicates_never_repicked_while_new_points_remain() -> None:
    x = _cloud(2, 80, seed=1, dups=30)
    got = ops.farthest_point_sample(x, 50)  # exactly the number of distinct points
    for b in range(2):
        picked = x[b, got[b]]
        assert torch.unique(picked, dim=0).shape[0] == 50


def test_fps_skip_near_origin_quirk() -> None:
    x = _cloud(2, 60, seed=2)
    # Squared norm 3e-4: padding to the upstream CUDA kernel, but distinct real points here.
    x[:, 7], x[:, 30] = 0.01, -0.01
    default = ops.farthest_point_sample(x, 60)
    quirk = ops.farthest_point_sample(x, 60, skip_near_origin=True)
    for b in range(2):
        assert default[b].tolist() == _ref_fps(x[b].numpy(), 60)
        assert quirk[b].tolist() == _ref_fps(x[b].numpy(), 60, skip_near_origin=True)
        assert {7, 30} <= set(default[b].tolist())
        assert not {7, 30} & set(quirk[b, 1:].tolist())


def test_fps_prefix_property_and_batch_independence() -> None:
    x = _cloud(4, 300, seed=3, dups=40)
    long, short = ops.farthest_point_sample(x, 128), ops.farthest_point_sample(x, 64)
    assert torch.equal(long[:, :64], short)
    for b in range(4):
        assert torch.equal(ops.farthest_point_sample(x[b : b + 1], 128)[0], long[b])


def test_fps_large_cloud_blocks() -> None:
    # N not a multiple of the internal block width, picks far beyond the first block.
    x = _cloud(2, 1000, seed=4, dups=100)
    got = ops.farthest_point_sample(x, 30)
    for b in range(2):
        assert got[b].tolist() == _ref_fps(x[b].numpy(), 30)


def test_fps_edge_counts_and_errors() -> None:
    x = _cloud(2, 32, seed=5)
    assert ops.farthest_point_sample(x, 0).shape == (2, 0)
    assert ops.farthest_point_sample(x, 1).tolist() == [[0], [0]]
    with pytest.raises(DataError, match="cannot pick 64 centres from a cloud of 32 points") as err:
        ops.farthest_point_sample(x, 64)
    assert err.value.hint
    with pytest.raises(DataError, match="shape"):
        ops.farthest_point_sample(x[..., :2], 4)


# --- kNN


@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_knn_matches_reference_with_duplicates(chunk_size: int | None) -> None:
    ref = _cloud(2, 90, seed=6, dups=40)
    query = torch.cat([ref[:, :10], _cloud(2, 15, seed=7)], dim=1)  # some queries sit on points
    dist, idx = ops.knn(ref, query, 12, chunk_size=chunk_size)
    assert dist.shape == idx.shape == (2, 25, 12)
    for b in range(2):
        want_d, want_i = _ref_knn(ref[b].numpy(), query[b].numpy(), 12)
        assert idx[b].tolist() == want_i.tolist()
        np.testing.assert_allclose(dist[b].detach().numpy(), want_d, rtol=1e-6, atol=1e-7)


def test_knn_boundary_ties_pick_lowest_indices() -> None:
    # Every reference point is equidistant from the query: the answer is 0..k-1, in order.
    ref = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, -1, 0], [0, 0, -1]]])
    dist, idx = ops.knn(ref, torch.zeros(1, 1, 3), 4)
    assert idx.tolist() == [[[0, 1, 2, 3]]]
    assert dist.tolist() == [[[1.0, 1.0, 1.0, 1.0]]]


def test_knn_batch_independence_and_k_equals_n() -> None:
    ref, query = _cloud(3, 40, seed=8, dups=10), _cloud(3, 9, seed=9)
    dist, idx = ops.knn(ref, query, 40)
    assert sorted(idx[1, 0].tolist()) == list(range(40))
    assert bool((dist[..., 1:] >= dist[..., :-1]).all())
    for b in range(3):
        d_b, i_b = ops.knn(ref[b : b + 1], query[b : b + 1], 40)
        assert torch.equal(i_b[0], idx[b]) and torch.equal(d_b[0], dist[b])


def test_knn_distances_are_differentiable() -> None:
    ref = _cloud(1, 20, seed=10, dtype=torch.float64).requires_grad_()
    query = _cloud(1, 5, seed=11, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda r, q: ops.knn(r, q, 4)[0], (ref, query))


def test_knn_errors() -> None:
    ref = _cloud(2, 16, seed=12)
    with pytest.raises(DataError, match="cannot find 32 neighbours in a cloud of 16 points"):
        ops.knn(ref, ref, 32)
    with pytest.raises(DataError):
        ops.knn(ref, ref, 0)
    with pytest.raises(DataError, match="batch size"):
        ops.knn(ref, ref[:1], 3)
    with pytest.raises(DataError, match="chunk_size"):
        ops.knn(ref, ref, 3, chunk_size=0)


# --- grouping


def test_group_is_fps_plus_knn_with_centre_subtracted() -> None:
    x = _cloud(2, 200, seed=13)
    g = ops.group(x, 16, 8)
    assert g.neighborhood.shape == (2, 16, 8, 3) and g.center.shape == (2, 16, 3)
    for b in range(2):
        centres = _ref_fps(x[b].numpy(), 16)
        assert g.center_idx[b].tolist() == centres
        _, want_i = _ref_knn(x[b].numpy(), x[b, centres].numpy(), 8)
        assert g.idx[b].tolist() == want_i.tolist()
        torch.testing.assert_close(g.center[b], x[b, centres])
        torch.testing.assert_close(g.neighborhood[b] + g.center[b, :, None], x[b][g.idx[b]])
    # Distinct points: each centre is its own nearest neighbour, at offset zero.
    assert torch.equal(g.idx[..., 0], g.center_idx)
    assert bool((g.neighborhood[:, :, 0] == 0).all())


def test_group_too_small_cloud() -> None:
    with pytest.raises(DataError, match="centres"):
        ops.group(_cloud(1, 20, seed=14), 32, 8)
    with pytest.raises(DataError, match="neighbours"):
        ops.group(_cloud(1, 20, seed=14), 4, 32)


# --- interpolation


def _ref_weights(target: np.ndarray, source: np.ndarray, k: int | None, eps: float) -> np.ndarray:
    out = np.zeros((len(target), len(source)))
    for i, t in enumerate(target):
        d = _sq(source, t).astype(np.float64)
        keep = (
            range(len(source)) if k is None else sorted(range(len(source)), key=d.__getitem__)[:k]
        )
        for j in keep:
            out[i, j] = 1.0 / (d[j] + eps)
        out[i] /= out[i].sum()
    return out


@pytest.mark.parametrize("k", [None, 3])
def test_inverse_distance_weights_and_interpolate(k: int | None) -> None:
    target, source = _cloud(2, 30, seed=15), _cloud(2, 12, seed=16)
    feats = torch.randn(2, 12, 5, generator=torch.Generator().manual_seed(0))
    w = ops.inverse_distance_weights(target, source, k=k)
    out = ops.interpolate(target, source, feats, k=k)
    for b in range(2):
        want = _ref_weights(target[b].numpy(), source[b].numpy(), k, 1e-8)
        np.testing.assert_allclose(w[b].numpy(), want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out[b].numpy(), want @ feats[b].numpy(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 30))
    if k is not None:
        assert bool(((w > 0).sum(-1) == k).all())


def test_interpolate_reproduces_coincident_source_and_learns_positions() -> None:
    source = _cloud(1, 8, seed=17, dtype=torch.float64).requires_grad_()
    target = source.detach()[:, :3].clone()
    feats = torch.randn(1, 8, 4, dtype=torch.float64)
    out = ops.interpolate(target, source, feats)
    torch.testing.assert_close(out[0], feats[0, :3], rtol=1e-5, atol=1e-6)
    # Point-PEFT's prompt positions learn through this op: the gradient must reach `source`.
    moved = ops.interpolate(target + 0.1, source, feats)
    moved.sum().backward()
    assert source.grad is not None and bool(source.grad.abs().sum() > 0)


def test_interpolate_rejects_mismatched_features() -> None:
    with pytest.raises(DataError, match="feats"):
        ops.interpolate(_cloud(1, 5, seed=0), _cloud(1, 4, seed=1), torch.zeros(1, 5, 2))
    with pytest.raises(DataError, match="neighbours"):
        ops.inverse_distance_weights(_cloud(1, 5, seed=0), _cloud(1, 2, seed=1), k=3)


# --- Chamfer distance


def _ref_chamfer(a: np.ndarray, b: np.ndarray, norm: str) -> float:
    d1 = np.array([min(_sq(b, p)) for p in a], dtype=np.float64)
    d2 = np.array([min(_sq(a, p)) for p in b], dtype=np.float64)
    if norm == "l2":
        return d1.mean() + d2.mean()
    return (np.sqrt(d1).mean() + np.sqrt(d2).mean()) / 2


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_chamfer_matches_reference(norm: str, chunk_size: int | None) -> None:
    a, b = _cloud(3, 40, seed=18, dups=10), _cloud(3, 25, seed=19, dups=5)
    per = ops.chamfer_distance(a, b, norm=norm, reduction="none", chunk_size=chunk_size)
    want = [_ref_chamfer(a[i].numpy(), b[i].numpy(), norm) for i in range(3)]
    np.testing.assert_allclose(per.numpy(), want, rtol=1e-5)
    mean = ops.chamfer_distance(a, b, norm=norm, chunk_size=chunk_size)
    assert mean.dim() == 0
    np.testing.assert_allclose(mean.item(), np.mean(want), rtol=1e-5)
    # Symmetric by definition.
    np.testing.assert_allclose(ops.chamfer_distance(b, a, norm=norm).item(), mean.item(), rtol=1e-6)


def test_chamfer_gradients() -> None:
    a = _cloud(2, 7, seed=20, dtype=torch.float64).requires_grad_()
    b = _cloud(2, 5, seed=21, dtype=torch.float64).requires_grad_()
    for norm in ("l1", "l2"):
        assert torch.autograd.gradcheck(
            lambda x, y, n=norm: ops.chamfer_distance(x, y, norm=n), (a, b)
        )
    # Identical clouds: distance 0 and a finite (zero) gradient even through the L1 square root.
    same = a.detach().clone().requires_grad_()
    loss = ops.chamfer_distance(same, a.detach(), norm="l1")
    loss.backward()
    assert loss.item() == 0.0
    assert bool(torch.isfinite(same.grad).all()) and bool((same.grad == 0).all())


def test_chamfer_errors() -> None:
    a = _cloud(1, 4, seed=0)
    with pytest.raises(DataError, match="norm"):
        ops.chamfer_distance(a, a, norm="l3")
    with pytest.raises(DataError, match="reduction"):
        ops.chamfer_distance(a, a, reduction="sum")
    with pytest.raises(DataError, match="non-empty"):
        ops.chamfer_distance(a, a[:, :0])


# --- dtypes and devices


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(dtype: torch.dtype) -> None:
    x = _cloud(2, 64, seed=22, dtype=dtype)
    g = ops.group(x, 8, 4)
    assert g.neighborhood.dtype == dtype and g.center_idx.dtype == torch.long
    if dtype == torch.float64:  # numpy has no bfloat16 to build a reference in
        for b in range(2):
            assert g.center_idx[b].tolist() == _ref_fps(x[b].numpy(), 8)
    assert ops.chamfer_distance(x, x).item() == 0.0


def test_gather_points_shapes_and_gradient() -> None:
    x = torch.randn(2, 10, 4, requires_grad=True)
    idx = torch.tensor([[[0, 1], [9, 9]], [[3, 3], [2, 0]]])
    out = ops.gather_points(x, idx)
    assert out.shape == (2, 2, 2, 4)
    torch.testing.assert_close(out[1, 0, 1], x[1, 3])
    out.sum().backward()
    assert x.grad[0, 9].tolist() == [2.0] * 4 and x.grad[0, 5].tolist() == [0.0] * 4


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    x = _cloud(4, 2048, seed=23, dups=200)
    y = _cloud(4, 1000, seed=24)
    cx, cy = x.cuda(), y.cuda()
    assert torch.equal(ops.farthest_point_sample(cx, 128).cpu(), ops.farthest_point_sample(x, 128))
    d_gpu, i_gpu = ops.knn(cx, cy, 32)
    d_cpu, i_cpu = ops.knn(x, y, 32)
    torch.testing.assert_close(d_gpu.cpu(), d_cpu)
    assert (i_gpu.cpu() == i_cpu).float().mean() > 0.999  # GPU arithmetic may flip near-ties
    g = ops.group(cx, 64, 32)
    assert g.neighborhood.is_cuda and g.neighborhood.shape == (4, 64, 32, 3)
    for norm in ("l1", "l2"):
        torch.testing.assert_close(
            ops.chamfer_distance(cx, cy, norm=norm).cpu(), ops.chamfer_distance(x, y, norm=norm)
        )
    w = ops.inverse_distance_weights(cy, cx[:, :64], k=3)
    torch.testing.assert_close(w.sum(-1).cpu(), torch.ones(4, 1000))
