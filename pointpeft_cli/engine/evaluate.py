"""Evaluation: logits over a split (optionally voted over augmented views) and the report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from pointpeft_cli.engine.metrics import ClassificationReport, classification_report
from pointpeft_cli.engine.runtime import autocast

Views = Callable[[torch.Tensor], Iterable[torch.Tensor]]


def voting_views(npoints: int, votes: int, seed: int) -> Views:
    """Upstream voting: per batch, `votes` random scale-and-translate views of an FPS pool."""
    from pointpeft_cli.data.sampling import vote_batches

    rng = np.random.default_rng(seed)
    return lambda points: vote_batches(points, npoints, votes, rng)


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    device: torch.device,
    *,
    views: Views | None = None,
    amp: torch.dtype | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits `[N, K]` (averaged over `views` when given) and labels `[N]`, in eval mode.

    Without `views` each batch's points are scored as they are (already sampled to the model's
    point count); with `views` the logits of every view of the batch are averaged.
    """
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    try:
        for batch in batches:
            points = batch["points"]
            total, count = None, 0
            for view in views(points) if views is not None else (points,):
                with autocast(device, amp):
                    out = model(view.to(device)).float()
                total = out if total is None else total + out
                count += 1
            assert total is not None
            all_logits.append((total / count).cpu())
            all_labels.append(batch["label"].cpu())
            if on_batch is not None:
                on_batch(len(points))
    finally:
        model.train(was_training)
    if not all_logits:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()


def report_from_logits(
    logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> ClassificationReport:
    """The classification report of argmax predictions."""
    preds = logits.argmax(1) if logits.size else np.zeros(0, dtype=np.int64)
    return classification_report(preds, labels, class_names)
