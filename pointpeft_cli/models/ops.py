"""Pure-PyTorch point-cloud ops: FPS, kNN, grouping, interpolation and Chamfer distance.

Everything runs on CPU and CUDA in any float dtype, vectorised over the batch, with no compiled
extensions. Squared distances are always computed directly as ``sum_c (a_c - b_c)**2`` (never the
expanded ``|a|² - 2a·b + |b|²`` form), so they are exact, never negative, identical for duplicate
points and bit-equal to a naive reference; ties then resolve deterministically to the lower index.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pointpeft_cli.errors import DataError

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "Grouped",
    "chamfer_distance",
    "farthest_point_sample",
    "gather_points",
    "group",
    "interpolate",
    "inverse_distance_weights",
    "knn",
    "square_distance",
]

#: Memory budget for one pairwise-distance block (temporaries included) in kNN and Chamfer.
DEFAULT_BLOCK_BYTES = 64 * 2**20

#: Squared norm at or below which the upstream CUDA FPS kernel treats a point as padding.
_NEAR_ORIGIN_SQ = 1e-3


class Grouped(NamedTuple):
    """Patches of a point cloud, as Point-MAE's ``Group`` module builds them.

    Attributes:
        neighborhood: ``[B, G, M, 3]`` neighbour coordinates relative to their centre.
        center: ``[B, G, 3]`` FPS centres.
        center_idx: ``[B, G]`` indices of the centres in the input cloud.
        idx: ``[B, G, M]`` indices of each centre's neighbours, nearest first.
    """

    neighborhood: Tensor
    center: Tensor
    center_idx: Tensor
    idx: Tensor


def _check_cloud(name: str, x: Tensor) -> None:
    if x.dim() != 3 or x.shape[-1] != 3:
        raise DataError(
            f"{name} must have shape [B, N, 3], got {list(x.shape)}",
            hint="pass a batch of xyz clouds; add a batch dimension with x.unsqueeze(0)",
        )
    if not x.is_floating_point():
        raise DataError(f"{name} must be a float tensor, got {x.dtype}", hint="call .float() first")


def _check_pair(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    _check_cloud(names[0], a)
    _check_cloud(names[1], b)
    if a.shape[0] != b.shape[0] or a.device != b.device or a.dtype != b.dtype:
        raise DataError(
            f"{names[0]} and {names[1]} differ in batch size, device or dtype "
            f"({a.shape[0]}/{a.device}/{a.dtype} vs {b.shape[0]}/{b.device}/{b.dtype})",
            hint="move both clouds to one device and dtype, with the same batch size",
        )


def _pair_sq(a: Tensor, b: Tensor) -> Tensor:
    """``||a - b||²`` over the last dim of broadcastable ``[..., 3]`` tensors, in a fixed order."""
    # One coordinate at a time keeps temporaries at the broadcast size (no [..., 3] block) and
    # makes every caller compute bit-identical values for the same pair.
    out = (a[..., 0] - b[..., 0]).square()
    out = out + (a[..., 1] - b[..., 1]).square()
    return out + (a[..., 2] - b[..., 2]).square()


def square_distance(a: Tensor, b: Tensor) -> Tensor:
    """Exact pairwise squared distances, differentiable w.r.t. both inputs.

    Args:
        a: ``[B, N, 3]`` points.
        b: ``[B, M, 3]`` points.

    Returns:
        ``[B, N, M]`` with ``out[b, i, j] = ||a[b, i] - b[b, j]||²``.
    """
    return _pair_sq(a.unsqueeze(2), b.unsqueeze(1))


def _chunk_rows(batch: int, rows: int, cols: int, itemsize: int, chunk_size: int | None) -> int:
    """Rows of a ``[batch, rows, cols]`` distance block that fit the memory budget."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise DataError(f"chunk_size must be >= 1, got {chunk_size}", hint="use e.g. 256")
        return chunk_size
    # ~3 live [B, chunk, cols] buffers at a time (two temporaries + the running sum).
    per_row = max(1, 3 * batch * cols * itemsize)
    return max(1, min(rows, DEFAULT_BLOCK_BYTES // per_row))


def gather_points(x: Tensor, idx: Tensor) -> Tensor:
    """Pick rows of ``x`` per batch element.

    Args:
        x: ``[B, N, C]`` features or points.
        idx: ``[B, *S]`` long indices into ``N``.

    Returns:
        ``[B, *S, C]``; differentiable w.r.t. ``x``.
    """
    batch, _, channels = x.shape
    flat = idx.reshape(batch, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, channels))
    return out.reshape(*idx.shape, channels)


@torch.no_grad()
def farthest_point_sample(xyz: Tensor, n: int, *, skip_near_origin: bool = False) -> Tensor:
    """Farthest point sampling, starting at index 0 as ``pointnet2_ops`` does.

    Each next pick is the point with the largest squared distance to the picked set; ties go to
    the lowest index. The result for ``n`` is a prefix of the result for any larger ``n``.

    Args:
        xyz: ``[B, N, 3]`` points.
        n: number of points to pick, ``0 <= n <= N``.
        skip_near_origin: copy the upstream CUDA kernel's quirk: after the first pick, never
            select a point with squared norm <= 1e-3 (it treats them as padding). Off by default
            because it drops real points near the origin.

    Returns:
        ``[B, n]`` long indices.

    Raises:
        DataError: bad shape, or ``n`` larger than the cloud.
    """
    _check_cloud("xyz", xyz)
    batch, num, _ = xyz.shape
    if n < 0 or n > num:
        raise DataError(
            f"cannot pick {n} centres from a cloud of {num} points",
            hint="use fewer groups or more points",
        )
    out = torch.zeros(batch, n, dtype=torch.long, device=xyz.device)
    if n <= 1:
        return out
    # Blocks of `width` points: a vectorised amax per block, then argmax over the block maxima and
    # inside the winning block; a flat argmax is several times slower on CPU.
    width = max(16, 1 << round(math.log2(math.sqrt(num))))
    blocks = -(-num // width)
    padded = blocks * width
    # Coordinate-major [3, B, P] so each per-coordinate pass reads one contiguous [B, P] plane.
    pts = xyz.new_zeros(3, batch, padded)
    pts[:, :, :num] = xyz.permute(2, 0, 1)
    mindist = xyz.new_full((batch, padded), float("inf"))
    mindist[:, num:] = float("-inf")  # padding stays below everything, so it is never picked
    if skip_near_origin:
        # -1 survives every minimum: such points lose to any real candidate (upstream quirk).
        mindist[:, :num].masked_fill_(xyz.square().sum(-1) <= _NEAR_ORIGIN_SQ, -1.0)
    _fps_loop(pts, mindist, out, width)
    return out


def _fps_loop(pts: Tensor, mindist: Tensor, out: Tensor, width: int) -> None:
    """Fill ``out[:, 1:]`` with FPS picks; ``out[:, 0]`` (index 0) is the first pick."""
    batch, padded = mindist.shape
    rows = torch.arange(batch, device=pts.device)
    by_block = mindist.view(batch, padded // width, width)
    dist, tmp = torch.empty_like(mindist), torch.empty_like(mindist)
    cur = pts[:, :, :1]  # [3, B, 1]
    for i in range(1, out.shape[1]):
        # (x - cx)² + (y - cy)² + (z - cz)², in place and in the same order as _pair_sq.
        torch.sub(pts[0], cur[0], out=dist).square_()
        dist.add_(torch.sub(pts[1], cur[1], out=tmp).square_())
        dist.add_(torch.sub(pts[2], cur[2], out=tmp).square_())
        torch.minimum(mindist, dist, out=mindist)
        # The first block holding the maximum holds its first occurrence: ties -> lowest index.
        block = by_block.amax(dim=2).argmax(dim=1)
        nxt = block * width + by_block[rows, block].argmax(dim=1)
        out[:, i] = nxt
        cur = pts[:, rows, nxt].unsqueeze(-1)


def _stable_topk_rows(dist: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` smallest entries per row, ordered by (value, index)."""
    vals, idx = torch.topk(dist, k, dim=-1, largest=False, sorted=True)
    # topk is free to choose among equal values at the k-th place; when ties straddle that
    # boundary, redo those rows with a stable sort (rare outside duplicate points).
    ambiguous = (dist <= vals[..., -1:]).sum(-1) > k
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero(as_tuple=True)
        idx[rows] = torch.sort(dist[rows], dim=-1, stable=True).indices[..., :k]
    # Order the chosen set by (value, index): sort by index, then stable-sort by value.
    idx = idx.sort(dim=-1).values
    order = torch.sort(dist.gather(-1, idx), dim=-1, stable=True).indices
    return idx.gather(-1, order)


def knn(
    ref: Tensor, query: Tensor, k: int, *, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest reference points of each query point.

    Args:
        ref: ``[B, N, 3]`` reference points.
        query: ``[B, M, 3]`` query points.
        k: neighbours per query, ``1 <= k <= N``.
        chunk_size: query rows per distance block; by default chosen so one block stays within
            ``DEFAULT_BLOCK_BYTES``.

    Returns:
        ``(sq_dist [B, M, k], idx [B, M, k])`` ascending by distance, ties to the lower index.
        ``sq_dist`` is differentiable w.r.t. both inputs; the search itself is not.

    Raises:
        DataError: bad shapes, or ``k`` larger than the reference cloud.
    """
    _check_pair(ref, query, ("ref", "query"))
    batch, num, _ = ref.shape
    rows = query.shape[1]
    if k < 1 or k > num:
        raise DataError(
            f"cannot find {k} neighbours in a cloud of {num} points",
            hint="use a smaller group size or more points",
        )
    step = _chunk_rows(batch, rows, num, ref.element_size(), chunk_size)
    with torch.no_grad():
        ref_d, query_d = ref.detach(), query.detach()
        parts = [
            _stable_topk_rows(square_distance(query_d[:, s : s + step], ref_d), k)
            for s in range(0, rows, step)
        ]
        idx = torch.cat(parts, dim=1) if parts else ref.new_zeros(batch, 0, k, dtype=torch.long)
    # Recompute the chosen distances with autograd; same arithmetic, so the same values.
    sq_dist = _pair_sq(query.unsqueeze(2), gather_points(ref, idx))
    return sq_dist, idx


def group(xyz: Tensor, num_group: int, group_size: int) -> Grouped:
    """FPS centres plus kNN neighbourhoods (Point-MAE's ``Group`` module, functional).

    Args:
        xyz: ``[B, N, 3]`` points.
        num_group: number of patches ``G`` (FPS centres).
        group_size: points per patch ``M`` (nearest neighbours of each centre, centre included).

    Returns:
        A :class:`Grouped` with centre-subtracted neighbourhoods.

    Raises:
        DataError: the cloud has fewer points than ``num_group`` or ``group_size``.
    """
    center_idx = farthest_point_sample(xyz, num_group)
    center = gather_points(xyz, center_idx)
    _, idx = knn(xyz, center, group_size)
    neighborhood = gather_points(xyz, idx) - center.unsqueeze(2)
    return Grouped(neighborhood, center, center_idx, idx)


def inverse_distance_weights(
    target: Tensor, source: Tensor, *, k: int | None = None, eps: float = 1e-8
) -> Tensor:
    """Inverse-squared-distance interpolation weights from source to target points.

    Args:
        target: ``[B, N, 3]`` points to interpolate at.
        source: ``[B, S, 3]`` points that carry features.
        k: use only the ``k`` nearest sources (PointNet++ uses 3); ``None`` uses all of them, as
            Point-PEFT's propagation does.
        eps: added to squared distances so coincident points get a finite weight.

    Returns:
        ``[B, N, S]`` weights, rows summing to 1 (zero outside the ``k`` nearest when ``k`` is
        set); differentiable w.r.t. both point sets.

    Raises:
        DataError: bad shapes, or ``k`` larger than the source cloud.
    """
    _check_pair(target, source, ("target", "source"))
    if k is None:
        recip = 1.0 / (square_distance(target, source) + eps)
    else:
        sq_dist, idx = knn(source, target, k)
        recip = torch.zeros(
            *target.shape[:2], source.shape[1], dtype=target.dtype, device=target.device
        ).scatter(-1, idx, 1.0 / (sq_dist + eps))
    return recip / recip.sum(-1, keepdim=True)


def interpolate(
    target: Tensor, source: Tensor, feats: Tensor, *, k: int | None = None, eps: float = 1e-8
) -> Tensor:
    """Propagate source features to target points by inverse-distance weighting.

    Args:
        target: ``[B, N, 3]`` points to interpolate at.
        source: ``[B, S, 3]`` points that carry the features.
        feats: ``[B, S, C]`` features of the source points.
        k: as in :func:`inverse_distance_weights`.
        eps: as in :func:`inverse_distance_weights`.

    Returns:
        ``[B, N, C]`` interpolated features.
    """
    if feats.dim() != 3 or feats.shape[:2] != source.shape[:2]:
        raise DataError(
            f"feats must have shape [B, S, C] matching source {list(source.shape)}, "
            f"got {list(feats.shape)}",
            hint="pass one feature row per source point",
        )
    weights = inverse_distance_weights(target, source, k=k, eps=eps)
    return torch.bmm(weights.to(feats.dtype), feats)


def _nearest_index(a: Tensor, b: Tensor, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    """For each point of ``a`` its nearest in ``b`` and vice versa (no gradients), chunked."""
    batch, rows, _ = a.shape
    cols = b.shape[1]
    step = _chunk_rows(batch, rows, cols, a.element_size(), chunk_size)
    idx_ab = []
    best_ba = torch.full((batch, cols), float("inf"), dtype=a.dtype, device=a.device)
    idx_ba = torch.zeros(batch, cols, dtype=torch.long, device=a.device)
    for s in range(0, rows, step):
        block = square_distance(a[:, s : s + step], b)  # [B, chunk, cols]
        idx_ab.append(block.argmin(dim=2))
        val, arg = block.min(dim=1)
        # Strict '<' keeps the earlier chunk on ties, so the lowest index wins overall.
        better = val < best_ba
        best_ba = torch.where(better, val, best_ba)
        idx_ba = torch.where(better, arg + s, idx_ba)
    return torch.cat(idx_ab, dim=1), idx_ba


def _safe_sqrt(x: Tensor) -> Tensor:
    # sqrt'(0) is infinite; exact matches get a zero gradient instead of NaN.
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), 0.0)


def chamfer_distance(
    a: Tensor,
    b: Tensor,
    *,
    norm: str = "l2",
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """Chamfer distance between two batches of clouds, as Point-MAE's extension defines it.

    ``'l2'``: ``mean_i min_j d_ij + mean_j min_i d_ij`` with squared distances ``d``
    (``ChamferDistanceL2``). ``'l1'``: ``(mean_i sqrt(min_j d_ij) + mean_j sqrt(min_i d_ij)) / 2``
    (``ChamferDistanceL1``). Upstream averages over all points of the batch at once, which equals
    the batch mean of per-sample values because every sample has the same point count.

    Args:
        a: ``[B, N, 3]`` points.
        b: ``[B, M, 3]`` points.
        norm: ``'l2'`` or ``'l1'``.
        reduction: ``'mean'`` (scalar over the batch) or ``'none'`` (``[B]``).
        chunk_size: rows of ``a`` per distance block; by default from the memory budget.

    Returns:
        The distance, differentiable w.r.t. both inputs.

    Raises:
        DataError: bad shapes, empty clouds, or an unknown ``norm``/``reduction``.
    """
    _check_pair(a, b, ("a", "b"))
    if norm not in ("l1", "l2") or reduction not in ("mean", "none"):
        raise DataError(
            f"unknown chamfer norm/reduction {norm!r}/{reduction!r}",
            hint="norm is 'l1' or 'l2'; reduction is 'mean' or 'none'",
        )
    if a.shape[1] == 0 or b.shape[1] == 0:
        raise DataError("chamfer distance needs non-empty clouds", hint="check the point counts")
    with torch.no_grad():
        idx_ab, idx_ba = _nearest_index(a.detach(), b.detach(), chunk_size)
    # Recompute only the matched pairs with autograd: O(N + M) memory for the backward pass.
    d_ab = _pair_sq(a, gather_points(b, idx_ab))
    d_ba = _pair_sq(b, gather_points(a, idx_ba))
    if norm == "l2":
        per_sample = d_ab.mean(1) + d_ba.mean(1)
    else:
        per_sample = (_safe_sqrt(d_ab).mean(1) + _safe_sqrt(d_ba).mean(1)) / 2
    return per_sample.mean() if reduction == "mean" else per_sample
