"""Optional approximation: each training sample's retrieval query, computed once and reused.

The exact method runs the frozen backbone over every training batch to get the retrieval
query (decision 4). With `peft.query_cache` on, a sample's query is computed the first time the
sample is seen and reused in later epochs, so those epochs skip the frozen pass (26 % of a
Point-PEFT step's FLOPs at ModelNet40 size, 13-14 % of its time on CPU). What changes: later
epochs retrieve with the query of the sample as it was augmented and sampled when first seen,
not as it is now. Off by default; its effect on accuracy is measured in `bench/accuracy.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pointpeft_cli.errors import UsageError


class QueryCache:
    """Raw retrieval queries `[rows, C]` keyed by training-sample index, grown on demand.

    Under torchrun every process fills its own cache; the resume state holds the main
    process's, so after `--resume` the other processes recompute the queries it lacks (a
    multi-process resume is not bit-exact with the cache on).
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.values = torch.zeros(0, dim)
        self.filled = torch.zeros(0, dtype=torch.bool)

    def __len__(self) -> int:
        """Samples whose query is stored."""
        return int(self.filled.sum())

    def missing(self, index: Tensor) -> Tensor:
        """`[B]` bool: which of these samples have no stored query yet."""
        self._check(index)
        rows = index.to(self.filled.device)
        inside = rows < self.filled.shape[0]
        hit = torch.zeros_like(inside)
        hit[inside] = self.filled[rows[inside]]
        return (~hit).to(index.device)

    def store(self, index: Tensor, query: Tensor) -> None:
        """Keep `query [B, C]` for samples `index [B]` (float32, on the queries' device)."""
        self._check(index)
        needed = int(index.max()) + 1 if index.numel() else 0
        if needed > self.filled.shape[0] or self.values.device != query.device:
            self._grow(max(needed, self.filled.shape[0]), query.device)
        rows = index.to(self.values.device)
        self.values[rows] = query.detach().to(torch.float32)
        self.filled[rows] = True

    def lookup(self, index: Tensor) -> Tensor:
        """Stored queries `[B, C]`; every sample must have been stored."""
        return self.values[index.to(self.values.device)]

    def state_dict(self) -> dict[str, Tensor]:
        """CPU tensors for a resume state."""
        return {"values": self.values.cpu(), "filled": self.filled.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what `state_dict` returned."""
        values, filled = state["values"], state["filled"]
        if values.dim() != 2 or values.shape[1] != self.dim or filled.shape != values.shape[:1]:
            raise UsageError(
                f"query cache state has shape {list(values.shape)}, expected [rows, {self.dim}]",
                hint="resume with the backbone the run was started with",
            )
        self.values, self.filled = values.to(torch.float32), filled.to(torch.bool)

    def _grow(self, rows: int, device: torch.device) -> None:
        values = torch.zeros(rows, self.dim, device=device)
        filled = torch.zeros(rows, dtype=torch.bool, device=device)
        old = self.filled.shape[0]
        values[:old], filled[:old] = self.values, self.filled
        self.values, self.filled = values, filled

    @staticmethod
    def _check(index: Tensor) -> None:
        if index.numel() and int(index.min()) < 0:
            raise UsageError(
                "the query cache needs each training sample's index, got a negative one",
                hint="pass sample_index (the row of each sample in the training split)",
            )
