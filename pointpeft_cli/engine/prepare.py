"""Turns a RunConfig into what a command needs: data, a model with its weights, and the bank."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pointpeft_cli.config.schema import RunConfig
from pointpeft_cli.engine.memory_bank import (
    MemoryBank,
    bank_cache_key,
    compute_bank,
    load_bank,
    save_bank,
)
from pointpeft_cli.engine.weights import RANDOM_INIT, BackboneWeights, resolve_weights
from pointpeft_cli.errors import DataError
from pointpeft_cli.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

Progress = Callable[[str, int | None], Callable[[int], None]]


def _no_progress(description: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


@dataclass(frozen=True)
class Sampling:
    """Resolved point count and grouping of a run."""

    points: int
    num_group: int
    group_size: int


def resolve_sampling(cfg: RunConfig) -> Sampling:
    """The task's upstream defaults, overridden by the config."""
    task = get_task(cfg.data.task)
    return Sampling(
        points=cfg.data.points or task.points,
        num_group=cfg.model.num_group or task.num_group,
        group_size=cfg.model.group_size or task.group_size,
    )


def load_split(cfg: RunConfig, split: str, cache_root: Path) -> Any:
    """The task's dataset for `split` (a PointDataset), subset as the config asks."""
    from pointpeft_cli.data.factory import build_dataset

    data = cfg.data
    max_samples = data.max_train_samples if split == "train" else data.max_test_samples
    return build_dataset(
        data.task,
        split,
        data_dir=Path(data.data_dir) if data.data_dir else None,
        cache_root=cache_root,
        points=resolve_sampling(cfg).points,
        trust_pickle=data.trust_pickle,
        way=data.way,
        shot=data.shot,
        fold=data.fold,
        max_samples=max_samples,
        seed=cfg.train.seed,
        shapes_size=data.shapes_train_size if split == "train" else data.shapes_test_size,
    )


def unshuffled(dataset: Any) -> Any:
    """A shallow copy of `dataset` that keeps each cloud's stored point order (epoch 0, no
    per-epoch shuffle); it shares the point arrays."""
    plain = copy.copy(dataset)
    plain.shuffle_points = False
    plain.set_epoch(0)
    return plain


def fixed_view(dataset: Any, points: int) -> Any:
    """The dataset reduced once to its deterministic test-time FPS points: what evaluation and
    the memory bank see."""
    from pointpeft_cli.data.sampling import FixedSampleDataset

    return FixedSampleDataset(unshuffled(dataset), points)


def build_model(cfg: RunConfig, num_classes: int, method: str | None = None) -> Any:
    """The classifier for the config (weights not loaded yet)."""
    from pointpeft_cli.models.registry import create_model
    from pointpeft_cli.peft.config import PointPeftConfig

    sampling = resolve_sampling(cfg)
    method = method or cfg.train.method
    peft = PointPeftConfig.from_dict(cfg.peft) if method == "point-peft" else None
    # Initial values come from the run's seed, so a rebuilt model (evaluate, export, resume) has
    # the same frozen random-init backbone and the same initial PEFT/head values.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        return create_model(
            cfg.model.backbone,
            num_classes=num_classes,
            method=method,
            num_group=sampling.num_group,
            group_size=sampling.group_size,
            peft=peft,
            drop_path_rate=cfg.model.drop_path_rate,
        )


def load_weights(model: Any, cfg: RunConfig, cache_root: Path) -> BackboneWeights:
    """Loads the backbone's pre-trained weights into `model` (unless random init is asked)."""
    weights = resolve_weights(
        cfg.model.backbone,
        pretrained=cfg.model.pretrained,
        checkpoint=cfg.model.checkpoint,
        cache_root=cache_root,
        trust_pickle=cfg.data.trust_pickle,
    )
    if weights.state is not None:
        report = model.load_pretrained(weights.state, source=weights.source)
        log.info(
            "loaded %s: %d tensors matched, %d missing (new modules), %d unused",
            weights.source,
            len(report.matched),
            len(report.missing),
            len(report.unexpected),
        )
    return weights


def bank_config(cfg: RunConfig, model: Any) -> dict[str, Any]:
    """What, besides weights and data, determines the bank's rows."""
    return {
        "backbone": cfg.model.backbone,
        "points": resolve_sampling(cfg).points,
        "grouping": [model.cfg.pretrain_num_group, model.cfg.pretrain_group_size],
        "feature": "max-pooled final-norm patch tokens, L2-normalised",
    }


def bank_path(cache_root: Path, key: str) -> Path:
    return cache_root / "memory_banks" / f"{key}.h5"


def obtain_bank(
    model: Any,
    train_set: Any,
    cfg: RunConfig,
    weights: BackboneWeights,
    cache_root: Path,
    device: torch.device,
    progress: Progress = _no_progress,
) -> tuple[MemoryBank, Path, bool]:
    """The memory bank of (weights, training data, feature config): cached, or built now.

    Returns:
        (bank, its cached path, whether it was built in this call).
    """
    fingerprint = train_set.fingerprint()
    feature_cfg = bank_config(cfg, model)
    if weights.sha256 == RANDOM_INIT:  # the weights are whatever the seed initialised
        feature_cfg["init_seed"] = cfg.train.seed
    key = bank_cache_key(weights.sha256, fingerprint, feature_cfg)
    path = bank_path(cache_root, key)
    if path.is_file():
        return load_bank(path), path, False
    from pointpeft_cli.store.locking import asset_lock

    # one builder per bank: a concurrent call waits, then reads the bank the first one wrote
    with asset_lock(cache_root, f"memory-bank-{key}"):
        if path.is_file():
            return load_bank(path), path, False
        for stale in path.parent.glob(f".{path.name}.*.incomplete"):  # left by a killed build
            stale.unlink(missing_ok=True)
        bank = _build_bank(model, train_set, cfg, weights, device, progress, feature_cfg)
        save_bank(path, bank)
    return bank, path, True


def _build_bank(
    model: Any,
    train_set: Any,
    cfg: RunConfig,
    weights: BackboneWeights,
    device: torch.device,
    progress: Progress,
    feature_cfg: dict[str, Any],
) -> MemoryBank:
    from pointpeft_cli.data.loader import make_loader

    sampling = resolve_sampling(cfg)
    view = fixed_view(train_set, sampling.points)
    if len(view) == 0:
        raise DataError("the training split is empty", hint="check --data-dir / the subset size")
    loader = make_loader(view, cfg.memory_bank.batch_size, False, False, seed=0)
    advance = progress("memory bank", len(view))
    was_training = model.training
    model.eval()
    try:
        batches = ((b["points"].to(device), b["label"], b["index"]) for b in loader)
        feats, labels = compute_bank(model.retrieval_features, batches, len(view), advance)
    finally:
        model.train(was_training)
    meta = {
        "backbone": cfg.model.backbone,
        "backbone_sha256": weights.sha256,
        "backbone_source": weights.source,
        "dataset_fingerprint": train_set.fingerprint(),
        "task": cfg.data.task,
        "split": "train",
        "points": sampling.points,
        "normalized_rows": True,
        "class_names": list(train_set.class_names),
        **feature_cfg,
    }
    return MemoryBank(feats, labels, meta)


def task_spec(cfg: RunConfig) -> TaskSpec:
    return get_task(cfg.data.task)
