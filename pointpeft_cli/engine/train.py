"""Fine-tuning: the epoch loop, evaluation, checkpoints, resume, and the run directory."""

from __future__ import annotations

import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from pointpeft_cli import __version__
from pointpeft_cli.config.presets import dump_config
from pointpeft_cli.config.schema import RunConfig
from pointpeft_cli.engine import distributed as D
from pointpeft_cli.engine.evaluate import predict_logits, report_from_logits
from pointpeft_cli.engine.grads import keep_gradients
from pointpeft_cli.engine.memory_bank import load_bank
from pointpeft_cli.engine.optim import adamw
from pointpeft_cli.engine.prepare import (
    Progress,
    Sampling,
    build_model,
    fixed_view,
    load_split,
    load_weights,
    obtain_bank,
    resolve_sampling,
)
from pointpeft_cli.engine.rundir import RunDir, last_scores, missing_dirs, protocol
from pointpeft_cli.engine.runtime import (
    amp_dtype,
    autocast,
    epoch_seed,
    pick_device,
    seed_everything,
    set_deterministic,
)
from pointpeft_cli.engine.schedule import CosineWithWarmup
from pointpeft_cli.errors import DataError, PointPeftError, RunInterrupted, TrainingDiverged

log = logging.getLogger(__name__)


def _no_progress(description: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


@dataclass
class TrainHooks:
    """How the loop reports: `progress(description, total)` returns an `advance(n)` callable."""

    progress: Progress = _no_progress
    on_epoch: Callable[[dict[str, Any]], None] = lambda record: None
    on_info: Callable[[str], None] = lambda message: None
    on_warn: Callable[[str], None] = log.warning


@dataclass
class FinetuneResult:
    """What `finetune` reports (cli.md JSON keys)."""

    run_dir: Path
    epochs: int
    best: dict[str, Any] | None
    last: dict[str, Any] | None
    params: dict[str, Any]
    seconds: float
    train_samples_per_second: float
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Loop:
    """Everything one training run holds."""

    cfg: RunConfig
    run: RunDir
    info: D.DistInfo
    device: torch.device
    sampling: Sampling
    model: Any
    wrapped: Any
    train_set: Any
    test_view: Any
    class_names: tuple[str, ...]
    optimizer: torch.optim.Optimizer
    schedule: CosineWithWarmup
    amp: torch.dtype | None
    scaler: Any
    hooks: TrainHooks
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None


def _train_loader(loop: _Loop, epoch: int) -> DataLoader:
    from pointpeft_cli.data.base import collate
    from pointpeft_cli.data.loader import make_loader

    cfg, ds = loop.cfg, loop.train_set
    ds.set_epoch(epoch)
    batch = cfg.train.batch_size
    drop_last = len(ds) // loop.info.world_size >= batch  # upstream drops the last batch
    seed = epoch_seed(cfg.train.seed, epoch, 0)
    if not loop.info.enabled:
        return make_loader(ds, batch, True, drop_last, seed, cfg.train.num_workers)
    sampler = DistributedSampler(
        ds, loop.info.world_size, loop.info.rank, shuffle=True, seed=seed % 2**31
    )
    return DataLoader(ds, batch, sampler=sampler, drop_last=drop_last, collate_fn=collate)


def _step_inputs(loop: _Loop, batch: dict[str, torch.Tensor], gen: torch.Generator, rng):
    from pointpeft_cli.data.sampling import sample_train_batch
    from pointpeft_cli.data.transforms import augment

    points = sample_train_batch(batch["points"], loop.sampling.points, gen)
    points = augment(points, loop.cfg.data.train_augment, rng)
    dev = loop.device
    return points.to(dev), batch["label"].to(dev), batch["index"].to(dev)


def _running_stats(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) of each running statistic a train-mode forward pass updates."""
    return [
        (buf, buf.clone())
        for m in model.modules()
        if m.training and getattr(m, "track_running_stats", False)
        for buf in m.buffers(recurse=False)
    ]


def _train_epoch(loop: _Loop, epoch: int) -> dict[str, Any]:
    cfg = loop.cfg.train
    lr = loop.schedule.lr_at(epoch)
    for group in loop.optimizer.param_groups:
        group["lr"] = lr
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 1))
    rng = np.random.default_rng(epoch_seed(cfg.seed, epoch, 2))
    torch.manual_seed(epoch_seed(cfg.seed, epoch, 3))  # dropout / DropPath
    loader = _train_loader(loop, epoch)
    loop.wrapped.train()
    params = [p for p in loop.model.parameters() if p.requires_grad]
    keep_gradients(params)
    advance = loop.hooks.progress(f"epoch {epoch + 1}/{cfg.epochs}", len(loader.dataset))
    loss_sum, correct, seen, skipped = 0.0, 0, 0, 0
    start = time.perf_counter()
    for batch in loader:
        points, labels, index = _step_inputs(loop, batch, gen, rng)
        # a skipped step must leave no trace: its forward pass also moved BatchNorm statistics
        stats = _running_stats(loop.model) if cfg.nan_policy == "skip" else []
        with autocast(loop.device, loop.amp):
            logits = loop.wrapped(points, sample_index=index)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        if not bool(torch.isfinite(loss)):
            if cfg.nan_policy == "skip":
                with torch.no_grad():
                    for buf, saved in stats:
                        buf.copy_(saved)
                skipped += 1
                loop.hooks.on_warn(
                    f"the loss became {loss.item()} at epoch {epoch + 1}; step skipped "
                    "(train.nan_policy=skip)"
                )
                continue
            raise TrainingDiverged(
                f"the loss became {loss.item()} at epoch {epoch + 1}; the run stopped",
                hint="resume from the last good checkpoint with a lower --lr, or "
                "--set train.nan_policy=skip",
            )
        loop.optimizer.zero_grad(set_to_none=False)
        loop.scaler.scale(loss).backward()
        if cfg.grad_clip:
            loop.scaler.unscale_(loop.optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        n = labels.shape[0]
        loss_sum += float(loss.detach()) * n
        correct += int((logits.argmax(1) == labels).sum())
        seen += n
        advance(n * loop.info.world_size)
    seconds = time.perf_counter() - start
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "loss": loss_sum / seen if seen else math.nan,
        "train_accuracy": correct / seen if seen else 0.0,
        "samples_per_second": seen * loop.info.world_size / seconds if seconds > 0 else 0.0,
        "train_seconds": seconds,
        "skipped_steps": skipped,
    }


def evaluate_split(loop: _Loop, description: str = "evaluate") -> dict[str, Any]:
    """Accuracy and mean-class accuracy of the current weights on the test split."""
    from pointpeft_cli.data.loader import make_loader

    loader = make_loader(loop.test_view, loop.cfg.eval.batch_size, False, False, seed=0)
    advance = loop.hooks.progress(description, len(loop.test_view))
    logits, labels = predict_logits(loop.model, loader, loop.device, amp=loop.amp, on_batch=advance)
    rep = report_from_logits(logits, labels, loop.class_names)
    return {"accuracy": rep.accuracy, "mean_class_accuracy": rep.mean_class_accuracy}


def _tensors_meta(loop: _Loop) -> dict[str, str]:
    return {"format": "pt", "pointpeft_version": __version__, "method": loop.cfg.train.method}


def _save_epoch(loop: _Loop, record: dict[str, Any], improved: bool) -> None:
    """Best, last and the resume state, each atomically; the resume state goes last."""
    state = loop.model.trainable_state_dict()
    meta = _tensors_meta(loop)
    if improved:
        loop.run.save_tensors("best", state, meta)
    loop.run.save_tensors("last", state, meta)
    loop.run.save_resume(
        {
            "epoch": record["epoch"],
            "model": {k: v.detach().cpu() for k, v in state.items()},
            "optimizer": loop.optimizer.state_dict(),
            "scaler": loop.scaler.state_dict(),
            "history": loop.history,
            "best": loop.best,
            **_cache_state(loop.model),
        }
    )
    loop.run.write_metrics(loop.history)


def _cache_state(model: torch.nn.Module) -> dict[str, Any]:
    """The query cache (when on), so a resumed run reuses the queries it had."""
    cache = getattr(model, "query_cache", None)
    return {} if cache is None else {"query_cache": cache.state_dict()}


def _run_epochs(loop: _Loop, start_epoch: int) -> None:
    cfg = loop.cfg.train
    for epoch in range(start_epoch, cfg.epochs):
        record = _train_epoch(loop, epoch)
        last_epoch = epoch == cfg.epochs - 1
        improved = False
        if ((epoch + 1) % cfg.eval_every == 0 or last_epoch) and loop.info.is_main:
            scores = evaluate_split(loop)
            record.update(test_accuracy=scores["accuracy"])
            record.update(test_mean_class_accuracy=scores["mean_class_accuracy"])
            improved = loop.best is None or scores["accuracy"] > loop.best["accuracy"]
            if improved:
                loop.best = {"epoch": epoch + 1, **scores}
        loop.history.append(record)
        if loop.info.is_main:
            _save_epoch(loop, record, improved)
            loop.hooks.on_epoch(record)
        D.barrier(loop.info)


def _shared_bank(
    model: Any, train_set: Any, cfg: RunConfig, weights: Any, cache_root: Path,
    device: torch.device, info: D.DistInfo, hooks: TrainHooks,
) -> tuple[Any, Path, bool]:  # fmt: skip
    """`obtain_bank` on the main rank first (it builds and caches), then on the others (they
    read the cached bank), so that the bank is built once."""
    if info.is_main:
        found = obtain_bank(model, train_set, cfg, weights, cache_root, device, hooks.progress)
    D.barrier(info)
    if not info.is_main:
        found = obtain_bank(model, train_set, cfg, weights, cache_root, device)
    return found


def _setup(
    cfg: RunConfig,
    run: RunDir,
    cache_root: Path,
    info: D.DistInfo,
    hooks: TrainHooks,
    resume: bool = False,
) -> tuple[_Loop, dict[str, Any]]:
    device = pick_device(cfg.train.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    seed_everything(cfg.train.seed)
    set_deterministic(cfg.train.deterministic)
    sampling = resolve_sampling(cfg)
    train_set = load_split(cfg, "train", cache_root)
    test_set = load_split(cfg, "test", cache_root)
    if tuple(test_set.class_names) != tuple(train_set.class_names):
        raise DataError(
            "train and test splits have different classes",
            hint=f"train: {', '.join(train_set.class_names)}; test: "
            f"{', '.join(test_set.class_names)}",
        )
    class_names = tuple(train_set.class_names)
    model = build_model(cfg, len(class_names))
    model.set_recompute_mlp(cfg.train.recompute_mlp)
    weights = load_weights(model, cfg, cache_root)
    model.to(device)
    bank_info: dict[str, Any] = {"used": False}
    if cfg.train.method == "point-peft":
        # a resumed run keeps the bank it trained with (its own copy), whatever the cache
        # holds now: cleared, or rebuilt by another version with other rounding
        if resume and run.bank.is_file():
            bank, path, built = load_bank(run.bank), run.bank, False
        else:
            bank, path, built = _shared_bank(
                model, train_set, cfg, weights, cache_root, device, info, hooks
            )
            if info.is_main:
                run.copy_bank(path)
        model.set_memory_bank(bank.tensor(device))
        bank_info = {"used": True, "cached_path": str(path), "built": built,
                     "num_samples": bank.num_samples, "feature_dim": bank.feature_dim}  # fmt: skip
    from pointpeft_cli.peft.trainable import count_parameters, param_groups

    optimizer = adamw(param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr)
    amp = amp_dtype(device, cfg.train.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    t = cfg.train
    schedule = CosineWithWarmup(t.lr, t.epochs, t.warmup_epochs, t.warmup_lr, t.min_lr)
    loop = _Loop(
        cfg, run, info, device, sampling, model, D.wrap_model(model, info, device), train_set,
        fixed_view(test_set, sampling.points), class_names, optimizer, schedule, amp, scaler,
        hooks,
    )  # fmt: skip
    facts = {
        "device": str(device),
        "backbone": {
            "name": cfg.model.backbone,
            "sha256": weights.sha256,
            "source": weights.source,
        },
        "dataset": {
            "task": cfg.data.task,
            "class_names": list(class_names),
            "train_fingerprint": train_set.fingerprint(),
            "test_fingerprint": test_set.fingerprint(),
            "num_train": len(train_set),
            "num_test": len(test_set),
        },
        "memory_bank": bank_info,
        "params": count_parameters(model).to_dict(),
    }
    return loop, facts


def _run_json(loop: _Loop, facts: dict[str, Any], status: str, seconds: float) -> dict[str, Any]:
    return {
        "status": status,
        "pointpeft_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "method": loop.cfg.train.method,
        "world_size": loop.info.world_size,
        "protocol": protocol(loop.cfg, loop.sampling),
        "epochs_completed": len(loop.history),
        "best": loop.best,
        "last": last_scores(loop.history),
        "seconds": seconds,
        **facts,
    }


def _restore(
    loop: _Loop, run: RunDir, state: dict[str, Any] | None, hooks: TrainHooks
) -> tuple[int, float]:
    """Applies the resume state; returns (first epoch to run, seconds already spent)."""
    if state is None:  # killed before its first epoch ended: start it again
        hooks.on_info(f"{run.path} has no finished epoch yet; starting it from epoch 1")
        return 0, 0.0
    loop.model.load_trainable_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scaler.load_state_dict(state["scaler"])
    loop.history, loop.best = list(state["history"]), state["best"]
    cache = getattr(loop.model, "query_cache", None)
    if cache is not None and "query_cache" in state:
        cache.load_state_dict(state["query_cache"])
    start_epoch = int(state["epoch"])
    spent = 0.0
    if loop.info.is_main:
        run.write_metrics(loop.history)  # a kill may have come between the state and metrics
        if run.run_json.is_file():
            spent = float(run.read_run_json().get("seconds", 0.0))
    hooks.on_info(f"resuming {run.path} after epoch {start_epoch}")
    return start_epoch, spent


def _train(
    cfg: RunConfig, run: RunDir, cache_root: Path, info: D.DistInfo, hooks: TrainHooks, resume: bool
) -> FinetuneResult:
    # a damaged resume state is reported before the data and the memory bank are prepared
    state = run.load_resume() if resume and run.has_checkpoint() else None
    loop, facts = _setup(cfg, run, cache_root, info, hooks, resume)
    start_epoch, spent = _restore(loop, run, state, hooks) if resume else (0, 0.0)
    if info.is_main:
        run.write_run_json(_run_json(loop, facts, "running", spent))
    started = time.perf_counter()
    try:
        _run_epochs(loop, start_epoch)
    except KeyboardInterrupt:
        if info.is_main:
            elapsed = spent + time.perf_counter() - started
            run.write_run_json(_run_json(loop, facts, "interrupted", elapsed))
        raise RunInterrupted(
            f"interrupted after {len(loop.history)} of {cfg.train.epochs} epochs",
            hint=f"continue with `pointpeft finetune --resume --out {run.path}`",
        ) from None
    except TrainingDiverged:
        if info.is_main:
            elapsed = spent + time.perf_counter() - started
            run.write_run_json(_run_json(loop, facts, "diverged", elapsed))
        raise
    seconds = spent + time.perf_counter() - started
    if info.is_main:
        run.write_run_json(_run_json(loop, facts, "complete", seconds))
    sps = [r["samples_per_second"] for r in loop.history if r.get("samples_per_second")]
    return FinetuneResult(
        run_dir=run.path,
        epochs=len(loop.history),
        best=loop.best,
        last=last_scores(loop.history),
        params=facts["params"],
        seconds=seconds,
        train_samples_per_second=float(np.mean(sps)) if sps else 0.0,
        history=loop.history,
    )


def finetune(
    cfg: RunConfig,
    run_path: Path,
    *,
    cache_root: Path,
    resume: bool = False,
    hooks: TrainHooks | None = None,
) -> FinetuneResult:
    """Fine-tunes as `cfg` says and writes the run directory (cli.md); resumable at epoch ends.

    The resolved config is written first, so `--resume` also continues a run that was killed
    before its first epoch ended. A new run that fails with an error before saving an epoch
    removes what it wrote (interrupts keep it, to resume).
    """
    hooks = hooks or TrainHooks()
    info = D.init_from_env(cfg.train.device)
    run = RunDir(run_path)
    created = [] if resume else missing_dirs(run.path)
    prepared = False
    try:
        if info.is_main:
            run.prepare(resume)
            prepared = True
            run.write_text(run.config, dump_config(cfg))
        D.barrier(info)
        return _train(cfg, run, cache_root, info, hooks, resume)
    except (PointPeftError, OSError) as exc:
        unstarted = prepared and not resume and not run.has_checkpoint()
        if unstarted and not isinstance(exc, RunInterrupted):
            run.discard_unstarted(created)
        raise
    finally:
        D.shutdown(info)
