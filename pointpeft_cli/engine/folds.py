"""Few-shot protocol: one run per episode fold, reported as mean ± std over folds."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from pointpeft_cli.config.schema import RunConfig
from pointpeft_cli.engine.train import FinetuneResult, TrainHooks, finetune
from pointpeft_cli.errors import UsageError
from pointpeft_cli.fsutil import atomic_write_json


def parse_folds(spec: str) -> list[int]:
    """`0-9`, `0,3,5` or `2` -> sorted unique fold numbers in 0..9."""
    folds: set[int] = set()
    try:
        for part in spec.split(","):
            lo, sep, hi = part.strip().partition("-")
            folds.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise UsageError(f"bad --folds {spec!r}", hint="use e.g. 0-9 or 0,1,2") from None
    if not folds or min(folds) < 0 or max(folds) > 9:
        raise UsageError(f"--folds {spec!r} must name folds within 0-9", hint="use e.g. 0-9")
    return sorted(folds)


def summarize(results: dict[int, FinetuneResult], key: str = "best") -> dict[str, Any]:
    """Per-fold scores and their mean and (population) standard deviation."""
    rows, accs = [], []
    for fold, res in sorted(results.items()):
        scores = getattr(res, key) or {}
        rows.append({"fold": fold, "run_dir": str(res.run_dir), "best": res.best, "last": res.last})
        accs.append(float(scores.get("accuracy", 0.0)))
    arr = np.asarray(accs)
    return {
        "folds": rows,
        "selection": key,
        "accuracy_mean": float(arr.mean()) if arr.size else 0.0,
        "accuracy_std": float(arr.std()) if arr.size else 0.0,
    }


def finetune_folds(
    cfg: RunConfig,
    out: Path,
    folds: list[int],
    *,
    cache_root: Path,
    resume: bool = False,
    hooks: TrainHooks | None = None,
) -> dict[str, Any]:
    """Runs `out/fold-<k>` for each fold and writes `out/folds.json` with mean ± std."""
    if cfg.data.task != "modelnet40-fewshot":
        raise UsageError("--folds applies to the modelnet40-fewshot task only")
    results: dict[int, FinetuneResult] = {}
    for fold in folds:
        fold_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=fold))
        run_dir = out / f"fold-{fold}"
        again = resume and (run_dir / "checkpoints" / "last.pt").is_file()
        results[fold] = finetune(fold_cfg, run_dir, cache_root=cache_root, resume=again,
                                 hooks=hooks)  # fmt: skip
    summary = summarize(results, "best" if cfg.train.select == "best" else "last")
    atomic_write_json(out / "folds.json", summary)
    return summary
