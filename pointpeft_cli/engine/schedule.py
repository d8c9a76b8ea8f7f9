"""Per-epoch learning rate: linear warm-up then cosine decay (the upstream CosineLRScheduler shape).

Upstream calls `scheduler.step(epoch)` at the end of each epoch, so epoch e trains with the rate
of e - 1 and the first two epochs both run at the warm-up start rate (method.md §12.13). Here
epoch e trains with `lr_at(e)`; the curve is otherwise the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CosineWithWarmup:
    """lr(e) for epochs e = 0 .. epochs-1."""

    base_lr: float
    epochs: int
    warmup_epochs: int = 10
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6

    def lr_at(self, epoch: int) -> float:
        warmup = min(self.warmup_epochs, max(self.epochs - 1, 0))
        if epoch < warmup:
            return self.warmup_lr + epoch * (self.base_lr - self.warmup_lr) / warmup
        # as timm's CosineLRScheduler without warmup_prefix: the cosine runs over all epochs
        progress = min(epoch / max(self.epochs, 1), 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr + (self.base_lr - self.min_lr) * cosine
