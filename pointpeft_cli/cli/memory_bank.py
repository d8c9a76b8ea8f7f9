"""`pointpeft build-memory-bank`: frozen-backbone features of a task's training split."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from pointpeft_cli.cli.common import progress_bridge, run_config, tune_allocator
from pointpeft_cli.cli.options import (
    BackboneOpt,
    CacheDirOpt,
    DataDirOpt,
    JsonOpt,
    MaybeDeviceOpt,
    PointsOpt,
    PresetOpt,
    SeedOpt,
    SetOpt,
    TaskOpt,
)
from pointpeft_cli.cli.output import Output

EXAMPLES = """Examples:

  pointpeft build-memory-bank                                 # point-mae-mini on shapes

  pointpeft build-memory-bank --backbone point-mae --task modelnet40

  pointpeft build-memory-bank --task folder --data-dir my_clouds --out bank.h5
"""

Opt = typer.Option


def build_memory_bank(
    preset: PresetOpt = None,
    backbone: BackboneOpt = None,
    task: TaskOpt = None,
    data_dir: DataDirOpt = None,
    points: PointsOpt = None,
    batch_size: Annotated[int | None, Opt("--batch-size", help="Clouds per forward pass.")] = None,
    device: MaybeDeviceOpt = None,
    seed: SeedOpt = None,
    out: Annotated[Path | None, Opt("--out", help="Also copy the bank to this .h5 file.")] = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Build (or reuse) the Point-prior memory bank of a backbone on a task's training split."""
    out_ = Output("build-memory-bank", json_out)
    tune_allocator()
    import shutil

    from pointpeft_cli import settings
    from pointpeft_cli.engine.prepare import build_model, load_split, load_weights, obtain_bank
    from pointpeft_cli.engine.runtime import pick_device
    from pointpeft_cli.fsutil import atomic_write

    flags = {"model.backbone": backbone, "data.task": task, "data.data_dir": data_dir,
             "data.points": points, "memory_bank.batch_size": batch_size,
             "train.device": device, "train.seed": seed}  # fmt: skip
    cfg, _ = run_config(preset, sets, flags)
    start = time.perf_counter()
    root = settings.cache_root(cache_dir)
    train_set = load_split(cfg, "train", root)
    model = build_model(cfg, len(train_set.class_names), method="linear")
    weights = load_weights(model, cfg, root)
    dev = pick_device(cfg.train.device)
    model.to(dev)
    with progress_bridge(out_) as progress:
        bank, path, built = obtain_bank(model, train_set, cfg, weights, root, dev, progress)
    if out is not None:
        atomic_write(out, lambda tmp: shutil.copyfile(path, tmp))
    payload = {
        "path": str(out or path),
        "cached_path": str(path),
        "cached": not built,
        "num_samples": bank.num_samples,
        "feature_dim": bank.feature_dim,
        "backbone_sha256": weights.sha256,
        "seconds": time.perf_counter() - start,
    }
    verb = "built" if built else "reused (cached)"
    out_.result(
        payload,
        human=lambda c: c.print(
            f"memory bank {verb}: {bank.num_samples} x {bank.feature_dim} -> {payload['path']}"
        ),
        primary=payload["path"],
    )
