"""Point-MAE pre-training: the epoch loop, exact resume, and the upstream-layout exports.

The output directory holds `config.yaml`, `metrics.jsonl`, `run.json`, `checkpoints/last.pt`
(resume state) and, rewritten atomically after every epoch:

* `pretrain.pth`: `{'base_model': state, 'epoch', 'metrics', 'best_metrics'}` with upstream key
  names, so `pointpeft download point-mae --from pretrain.pth` and `finetune` accept it exactly
  like the official file (for the `point-mae` config it is the 209-tensor layout);
* `pretrain.safetensors`: the same tensors;
* `encoder-fp16.safetensors`: the `MAE_encoder.*` tensors in float16 (what fine-tuning loads;
  the shipped point-mae-mini weights are this file).

Each epoch's randomness (data, augmentation, masks, DropPath) is seeded from (seed, epoch) alone,
so `--resume` continues bit-exactly after the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from pointpeft_cli import __version__
from pointpeft_cli.engine.grads import keep_gradients
from pointpeft_cli.engine.optim import adamw
from pointpeft_cli.engine.pretrain_config import PretrainConfig, read_pretrain_config
from pointpeft_cli.engine.pretrain_data import build_source, collate_points, describe_source
from pointpeft_cli.engine.rundir import RunDir
from pointpeft_cli.engine.runtime import epoch_seed, pick_device, seed_everything
from pointpeft_cli.engine.schedule import CosineWithWarmup
from pointpeft_cli.engine.train import TrainHooks
from pointpeft_cli.errors import ConfigError, RunInterrupted, TrainingDiverged
from pointpeft_cli.fsutil import atomic_write
from pointpeft_cli.models.mae_pretrain import MaskedAutoencoder

PTH_NAME = "pretrain.pth"
SAFETENSORS_NAME = "pretrain.safetensors"
ENCODER_FP16_NAME = "encoder-fp16.safetensors"


@dataclass
class PretrainResult:
    """What `pretrain` reports."""

    out_dir: Path
    epochs: int
    loss: float | None
    seconds: float
    samples_per_second: float
    parameters: int
    files: dict[str, str]
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Loop:
    cfg: PretrainConfig
    run: RunDir
    device: torch.device
    model: MaskedAutoencoder
    data: Any
    optimizer: torch.optim.Optimizer
    schedule: CosineWithWarmup
    hooks: TrainHooks
    history: list[dict[str, Any]] = field(default_factory=list)


def build_mae(cfg: PretrainConfig) -> MaskedAutoencoder:
    """The masked autoencoder of `cfg.model` (registry backbone + `overrides`)."""
    from pointpeft_cli.models.registry import default_config

    backbone = default_config(cfg.model.backbone)
    fields = {f.name for f in dataclasses.fields(backbone)}
    unknown = sorted(set(cfg.model.overrides) - fields)
    if unknown:
        raise ConfigError(
            f"unknown backbone setting model.overrides.{unknown[0]}",
            hint=f"known settings: {', '.join(sorted(fields))}",
        )
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.overrides.items()}
    if backbone.family != "point-mae":
        raise ConfigError(
            f"{cfg.model.backbone} is not a Point-MAE-family backbone",
            hint="Point-MAE pre-training supports point-mae and point-mae-mini configs",
        )
    return MaskedAutoencoder(
        dataclasses.replace(backbone, **over),
        mask_ratio=cfg.model.mask_ratio,
        decoder_depth=cfg.model.decoder_depth,
        decoder_heads=cfg.model.decoder_heads,
        decoder_drop_path=cfg.model.decoder_drop_path,
    )


def _loader(loop: _Loop, epoch: int) -> DataLoader:
    data, t = loop.data, loop.cfg.train
    data.set_epoch(epoch)
    iterable = isinstance(data, IterableDataset)
    gen = torch.Generator().manual_seed(epoch_seed(t.seed, epoch, 0))
    drop_last = iterable or len(data) >= t.batch_size  # upstream drops the last partial batch
    return DataLoader(
        data, batch_size=t.batch_size, shuffle=not iterable, drop_last=drop_last,
        num_workers=t.num_workers, collate_fn=collate_points, generator=gen,
    )  # fmt: skip


def _train_epoch(loop: _Loop, epoch: int) -> dict[str, Any]:
    from pointpeft_cli.data.transforms import augment

    t = loop.cfg.train
    lr = loop.schedule.lr_at(epoch)
    for group in loop.optimizer.param_groups:
        group["lr"] = lr
    masks = torch.Generator().manual_seed(epoch_seed(t.seed, epoch, 1))
    rng = np.random.default_rng(epoch_seed(t.seed, epoch, 2))
    torch.manual_seed(epoch_seed(t.seed, epoch, 3))  # DropPath
    loader = _loader(loop, epoch)
    total = getattr(loop.data, "epoch_size", None) or len(loop.data)
    advance = loop.hooks.progress(f"epoch {epoch + 1}/{t.epochs}", total)
    loop.model.train()
    params = [p for p in loop.model.parameters() if p.requires_grad]
    keep_gradients(params)
    loss_sum, seen, start = 0.0, 0, time.perf_counter()
    for points in loader:
        points = augment(points, loop.cfg.data.augment, rng).to(loop.device)
        loss = loop.model(points, masks).loss
        if not bool(torch.isfinite(loss)):
            raise TrainingDiverged(
                f"the reconstruction loss became {loss.item()} at epoch {epoch + 1}",
                hint="resume from the last epoch with a lower --lr",
            )
        loop.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        loop.optimizer.step()
        loss_sum += float(loss.detach()) * points.shape[0]
        seen += points.shape[0]
        advance(points.shape[0])
    seconds = time.perf_counter() - start
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "loss": loss_sum / seen if seen else math.nan,
        "samples": seen,
        "samples_per_second": seen / seconds if seconds > 0 else 0.0,
        "train_seconds": seconds,
    }


def official_container(model: MaskedAutoencoder, epoch: int, loss: float) -> dict[str, Any]:
    """The upstream `save_checkpoint` container (without the optimizer, which fine-tuning
    never reads)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"base_model": state, "epoch": epoch, "metrics": {"loss": loss}, "best_metrics": {}}


def fp16_encoder(model: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """`MAE_encoder.*` tensors, floats in float16 (integer BatchNorm counters kept)."""
    return {
        k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.encoder_state_dict().items()
    }


def export(model: MaskedAutoencoder, out: Path, epoch: int, loss: float) -> dict[str, str]:
    """Write the three weight files atomically; return their paths by kind."""
    from safetensors.torch import save_file

    container = official_container(model, epoch, loss)
    meta = {"format": "pt", "pointpeft_version": __version__, "epoch": str(epoch)}
    paths = {"pth": out / PTH_NAME, "safetensors": out / SAFETENSORS_NAME,
             "encoder_fp16": out / ENCODER_FP16_NAME}  # fmt: skip
    atomic_write(paths["pth"], lambda tmp: torch.save(container, tmp))
    base = container["base_model"]
    atomic_write(paths["safetensors"], lambda tmp: save_file(base, str(tmp), metadata=meta))
    enc = fp16_encoder(model)
    atomic_write(paths["encoder_fp16"], lambda tmp: save_file(enc, str(tmp), metadata=meta))
    return {k: str(v) for k, v in paths.items()}


def _save_epoch(loop: _Loop, record: dict[str, Any]) -> dict[str, str]:
    """Exports first, the resume state last: a resumable epoch always has its weights."""
    files = export(loop.model, loop.run.path, record["epoch"], record["loss"])
    loop.run.save_resume(
        {
            "epoch": record["epoch"],
            "model": {k: v.detach().cpu() for k, v in loop.model.state_dict().items()},
            "optimizer": loop.optimizer.state_dict(),
            "history": loop.history,
        }
    )
    loop.run.write_metrics(loop.history)
    return files


def _setup(cfg: PretrainConfig, run: RunDir, cache_root: Path, hooks: TrainHooks) -> _Loop:
    device = pick_device(cfg.train.device)
    if cfg.train.threads:
        # one thread is what makes a run reproducible on any core count, and on a busy
        # machine it is also faster: two threads spin-wait whenever one is descheduled
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    model = build_mae(cfg).to(device)
    d = cfg.data
    data = build_source(
        d.source, points=d.points, seed=cfg.train.seed, samples_per_epoch=d.samples_per_epoch,
        data_dir=Path(d.data_dir) if d.data_dir else None, cache_root=cache_root,
    )  # fmt: skip
    t = cfg.train
    optimizer = adamw(_param_groups(model, t.weight_decay), lr=t.lr)
    schedule = CosineWithWarmup(t.lr, t.epochs, t.warmup_epochs, t.warmup_lr, t.min_lr)
    return _Loop(cfg, run, device, model, data, optimizer, schedule, hooks)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # upstream add_weight_decay: no decay for biases, norms and 1-d tensors (mask_token too)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim <= 1 or name.endswith(".bias") or name == "mask_token"
        (no_decay if skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]  # fmt: skip


def _run_json(loop: _Loop, status: str, seconds: float) -> dict[str, Any]:
    last = loop.history[-1] if loop.history else None
    return {
        "status": status,
        "kind": "pretrain",
        "pointpeft_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(loop.device),
        "threads": torch.get_num_threads(),
        "backbone": loop.cfg.model.backbone,
        "architecture": dataclasses.asdict(loop.model.cfg),
        "parameters": sum(p.numel() for p in loop.model.parameters()),
        "data": describe_source(loop.data),
        "epochs_completed": len(loop.history),
        "loss": None if last is None else last["loss"],
        "seconds": seconds,
    }


def load_saved_config(out: Path) -> PretrainConfig:
    """The config a run directory was started with (for `--resume`)."""
    path = RunDir(out).config
    if not path.is_file():
        raise ConfigError(f"{path} does not exist", hint="resume needs the directory of a run")
    return read_pretrain_config(path.read_text(encoding="utf-8"), str(path))


def pretrain(
    cfg: PretrainConfig,
    out: Path,
    *,
    cache_root: Path,
    resume: bool = False,
    hooks: TrainHooks | None = None,
) -> PretrainResult:
    """Pre-train as `cfg` says into `out` (resumable at epoch ends).

    Raises:
        UsageError: `out` is not empty without `resume`, or has nothing to resume.
        RunInterrupted: Ctrl-C; the last finished epoch is saved and resumable (exit 130).
        TrainingDiverged: the loss became NaN/Inf.
    """
    hooks = hooks or TrainHooks()
    run = RunDir(out)
    run.prepare(resume)
    loop = _setup(cfg, run, cache_root, hooks)
    start_epoch, spent = 0, 0.0
    if resume:
        state = run.load_resume()
        loop.model.load_state_dict(state["model"])
        loop.optimizer.load_state_dict(state["optimizer"])
        loop.history = list(state["history"])
        start_epoch = int(state["epoch"])
        spent = float(run.read_run_json().get("seconds", 0.0))
        hooks.on_info(f"resuming {run.path} after epoch {start_epoch}")
    run.write_text(run.config, cfg.dump())
    run.write_run_json(_run_json(loop, "running", spent))
    started = time.perf_counter()
    files: dict[str, str] = {}
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            record = _train_epoch(loop, epoch)
            loop.history.append(record)
            files = _save_epoch(loop, record)
            hooks.on_epoch(record)
    except KeyboardInterrupt:
        run.write_run_json(_run_json(loop, "interrupted", spent + time.perf_counter() - started))
        raise RunInterrupted(
            f"interrupted after {len(loop.history)} of {cfg.train.epochs} epochs",
            hint=f"continue with `pointpeft pretrain --resume --out {run.path}`",
        ) from None
    seconds = spent + time.perf_counter() - started
    run.write_run_json(_run_json(loop, "complete", seconds))
    if not files and loop.history:  # resumed a finished run: the exports are already there
        files = {"pth": str(out / PTH_NAME), "safetensors": str(out / SAFETENSORS_NAME),
                 "encoder_fp16": str(out / ENCODER_FP16_NAME)}  # fmt: skip
    sps = [r["samples_per_second"] for r in loop.history if r.get("samples_per_second")]
    return PretrainResult(
        out_dir=run.path,
        epochs=len(loop.history),
        loss=loop.history[-1]["loss"] if loop.history else None,
        seconds=seconds,
        samples_per_second=float(np.mean(sps)) if sps else 0.0,
        parameters=sum(p.numel() for p in loop.model.parameters()),
        files=files,
        history=loop.history,
    )
