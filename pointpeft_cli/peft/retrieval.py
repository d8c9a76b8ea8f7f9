"""Point-prior retrieval: parameter-free top-k cosine attention over the memory bank.

Fully vectorised on the bank's device (no Python loop over samples, no `.tolist()`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pointpeft_cli.errors import UsageError


class Retrieved(NamedTuple):
    """One batch's retrieval.

    Attributes:
        prompt_input: `[B, k + 2, D]` = [raw query, softmax-weighted neighbour sum, k neighbours].
        index: `[B, k]` bank rows, most similar first.
        weight: `[B, k]` softmax weights of those rows.
    """

    prompt_input: Tensor
    index: Tensor
    weight: Tensor


def check_bank(bank: Tensor | None, dim: int) -> Tensor:
    """Validate a memory bank `[N, D]` (float, finite, D == dim) and return it."""
    if bank is None:
        raise UsageError(
            "point-peft needs a memory bank, and none is set on the model",
            hint="build one with `pointpeft build-memory-bank`, then model.set_memory_bank(...)",
        )
    if bank.dim() != 2 or bank.shape[1] != dim or not bank.is_floating_point():
        raise UsageError(
            f"memory bank must be a float [N, {dim}] tensor, got {list(bank.shape)} {bank.dtype}",
            hint="rebuild the memory bank with the same backbone",
        )
    return bank


@torch.no_grad()
def retrieve(
    query: Tensor,
    bank: Tensor,
    k: int,
    temperature: float = 1.0,
    exclude: Tensor | None = None,
) -> Retrieved:
    """Top-k cosine retrieval with softmax weights (method.md §3.3, decision 4).

    Args:
        query: `[B, D]` raw features of the frozen backbone.
        bank: `[N, D]` rows, L2-normalised.
        k: neighbours to keep.
        temperature: softmax temperature over the k similarities.
        exclude: optional `[B]` bank row per sample to skip (negative = none).

    Returns:
        A `Retrieved` tuple.
    """
    available = bank.shape[0] - (1 if exclude is not None else 0)
    if available < k:
        raise UsageError(
            f"memory bank has {bank.shape[0]} rows; retrieval needs at least {k} (+1 with exclude)",
            hint="build the memory bank over the whole training split",
        )
    sim = F.normalize(query, dim=-1) @ bank.t()  # [B, N]
    if exclude is not None:
        rows = exclude.to(device=sim.device, dtype=torch.long).clamp(min=0).unsqueeze(1)
        hit = (exclude >= 0).to(sim.device).unsqueeze(1)
        penalty = torch.zeros(rows.shape, dtype=sim.dtype, device=sim.device)
        sim = sim.scatter_add(1, rows, penalty.masked_fill(hit, -torch.inf))
    top, index = sim.topk(k, dim=1)
    weight = torch.softmax(top / temperature, dim=1)
    neighbours = bank[index]  # [B, k, D]
    agg = torch.bmm(weight.unsqueeze(1), neighbours)  # [B, 1, D]
    prompt_input = torch.cat([query.unsqueeze(1), agg, neighbours], dim=1)
    return Retrieved(prompt_input, index, weight)
