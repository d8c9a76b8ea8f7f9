"""`pointpeft pretrain`: Point-MAE masked-autoencoder pre-training into an upstream-layout file."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pointpeft_cli.cli.common import progress_bridge, tune_allocator
from pointpeft_cli.cli.options import (
    BackboneOpt,
    BatchSizeOpt,
    CacheDirOpt,
    DataDirOpt,
    EpochsOpt,
    JsonOpt,
    LrOpt,
    MaybeDeviceOpt,
    PointsOpt,
    PresetOpt,
    PrintConfigOpt,
    ResumeOpt,
    RunOutOpt,
    SeedOpt,
    SetOpt,
)
from pointpeft_cli.cli.output import Output

EXAMPLES = """Examples:

  pointpeft pretrain --out runs/pretrain-mini            # reproduces the shipped point-mae-mini

  pointpeft pretrain --source folder --data-dir my_clouds/ --epochs 50 --out runs/mine

  pointpeft pretrain --backbone point-mae --source shapenet55 --data-dir ShapeNet55-34 \\
      --preset pretrain_point_mae --out runs/mae

  pointpeft pretrain --resume --out runs/pretrain-mini   # continue after Ctrl-C
"""

Opt = typer.Option
SourceOpt = Annotated[
    str | None,
    Opt("--source", help="shapes (procedural, default), folder, modelnet40 or shapenet55.",
        show_default=False),
]  # fmt: skip


def pretrain(
    preset: PresetOpt = None,
    backbone: BackboneOpt = None,
    source: SourceOpt = None,
    data_dir: DataDirOpt = None,
    points: PointsOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    device: MaybeDeviceOpt = None,
    out: RunOutOpt = None,
    resume: ResumeOpt = False,
    sets: SetOpt = None,
    print_config: PrintConfigOpt = False,
    json_out: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Pre-train a Point-MAE-family backbone (masked autoencoder, Chamfer-L2 on masked patches).

    Default: the `pretrain_point_mae_mini` preset (point-mae-mini on the procedural shapes).
    Writes pretrain.pth (upstream layout, usable with `download --from` and
    `finetune --set model.checkpoint=`), pretrain.safetensors and encoder-fp16.safetensors.
    """
    out_ = Output("pretrain", json_out)
    tune_allocator()
    from pointpeft_cli import settings
    from pointpeft_cli.engine.pretrain import load_saved_config
    from pointpeft_cli.engine.pretrain import pretrain as run_pretrain
    from pointpeft_cli.engine.pretrain_config import resolve_pretrain_config
    from pointpeft_cli.engine.rundir import default_run_dir
    from pointpeft_cli.engine.train import TrainHooks
    from pointpeft_cli.errors import UsageError

    flags = {
        "model.backbone": backbone, "data.source": source,
        "data.data_dir": None if data_dir is None else str(data_dir), "data.points": points,
        "train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr,
        "train.seed": seed, "train.device": device,
    }  # fmt: skip
    if resume:
        if out is None:
            raise UsageError("--resume needs --out DIR", hint="pass the directory to continue")
        if preset or sets or any(v is not None for v in flags.values()):
            raise UsageError("--resume continues with the run's saved config; drop other flags")
        cfg = load_saved_config(out)
    else:
        cfg = resolve_pretrain_config(preset, sets or [], flags)
        if data_dir is not None and source is None and cfg.data.source == "shapes":
            # the procedural stream reads no files: a bare --data-dir means a folder of clouds
            flags["data.source"] = "folder"
            cfg = resolve_pretrain_config(preset, sets or [], flags)
    if print_config:
        if out_.json_mode:
            out_.result({"config": cfg.to_dict()})
        else:
            typer.echo(cfg.dump(), nl=False)
        return
    run_path = out or default_run_dir(f"pretrain-{cfg.model.backbone}-{cfg.data.source}")
    with progress_bridge(out_) as progress:
        hooks = TrainHooks(progress=progress, on_epoch=lambda r: out_.info(_epoch_line(r)),
                           on_info=out_.info)  # fmt: skip
        result = run_pretrain(
            cfg, run_path, cache_root=settings.cache_root(cache_dir), resume=resume, hooks=hooks
        )
    payload = {
        "out_dir": str(result.out_dir),
        "backbone": cfg.model.backbone,
        "source": cfg.data.source,
        "epochs": result.epochs,
        "loss": result.loss,
        "parameters": result.parameters,
        "seconds": result.seconds,
        "samples_per_second": result.samples_per_second,
        "files": result.files,
        "overrides": cfg.model.overrides,
    }
    out_.result(payload, human=lambda c: _summary(c, payload), primary=result.files.get("pth"))


def _epoch_line(r: dict[str, Any]) -> str:
    return (
        f"epoch {r['epoch']:>3}  chamfer-l2 {r['loss']:.5f}  lr {r['lr']:.2e}  "
        f"{r['samples_per_second']:.1f} samples/s"
    )


def _summary(console: Any, p: dict[str, Any]) -> None:
    loss = "n/a" if p["loss"] is None else f"{p['loss']:.5f}"
    console.print(
        f"[bold green]Done[/bold green] pre-trained {p['backbone']} on {p['source']}: "
        f"{p['epochs']} epochs in {p['seconds']:.0f} s, final Chamfer-L2 {loss}"
    )
    files = p["files"]
    for kind in ("pth", "safetensors", "encoder_fp16"):
        if kind in files:
            console.print(f"  {kind}: {files[kind]}")
    if "pth" in files and not p["overrides"]:  # a changed architecture fits no preset
        console.print("next:")
        if p["backbone"] == "point-mae":
            console.print(f"  pointpeft download point-mae --from {files['pth']}")
        console.print(f"  pointpeft finetune --backbone {p['backbone']} --task shapes "
                      f"--set model.checkpoint={files['pth']}")  # fmt: skip
