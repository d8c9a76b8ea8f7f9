"""`pointpeft finetune`: train Point-PEFT (or full / linear) and write a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pointpeft_cli.cli.common import progress_bridge, run_config, tune_allocator
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
    TaskOpt,
)
from pointpeft_cli.cli.output import Output

EXAMPLES = """Examples:

  pointpeft finetune                                          # embedded default, offline

  pointpeft finetune --backbone point-mae --task modelnet40

  pointpeft finetune --task shapes --method full --epochs 5 --out runs/full
"""

Opt = typer.Option


def finetune(
    preset: PresetOpt = None,
    backbone: BackboneOpt = None,
    task: TaskOpt = None,
    data_dir: DataDirOpt = None,
    points: PointsOpt = None,
    method: Annotated[str | None, Opt("--method", help="point-peft, full or linear.")] = None,
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    device: MaybeDeviceOpt = None,
    out: RunOutOpt = None,
    resume: ResumeOpt = False,
    sets: SetOpt = None,
    print_config: PrintConfigOpt = False,
    max_train_samples: Annotated[int | None, Opt("--max-train-samples")] = None,
    max_test_samples: Annotated[int | None, Opt("--max-test-samples")] = None,
    folds: Annotated[
        str | None, Opt("--folds", help="Few-shot: run these folds (e.g. 0-9), report mean ± std.")
    ] = None,
    query_cache: Annotated[
        bool | None,
        Opt(
            "--query-cache/--no-query-cache",
            help="Approximation (point-peft): compute each training sample's retrieval query "
            "once and reuse it in later epochs, skipping the frozen retrieval pass there.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Fine-tune a pre-trained backbone with Point-PEFT (or `full` / `linear` to compare)."""
    out_ = Output("finetune", json_out)
    tune_allocator()
    from pointpeft_cli import settings
    from pointpeft_cli.engine.adapter import read_run_config
    from pointpeft_cli.engine.folds import finetune_folds, parse_folds
    from pointpeft_cli.engine.rundir import RunDir, default_run_dir
    from pointpeft_cli.engine.train import TrainHooks
    from pointpeft_cli.engine.train import finetune as run_finetune
    from pointpeft_cli.errors import UsageError

    flags = {
        "model.backbone": backbone, "data.task": task, "data.data_dir": data_dir,
        "data.points": points, "train.method": method, "train.epochs": epochs,
        "train.batch_size": batch_size, "train.lr": lr, "train.seed": seed,
        "train.device": device, "data.max_train_samples": max_train_samples,
        "data.max_test_samples": max_test_samples, "peft.query_cache": query_cache,
    }  # fmt: skip
    fold_list = parse_folds(folds) if folds else None
    if resume:
        if out is None:
            raise UsageError("--resume needs --out RUN_DIR", hint="pass the run to continue")
        if preset or sets or any(v is not None for v in flags.values()):
            raise UsageError("--resume continues with the run's saved config; drop other flags")
        saved = out / f"fold-{fold_list[0]}" if fold_list else out
        cfg, name = read_run_config(RunDir(saved)), None
    else:
        cfg, name = run_config(preset, sets, flags)
    if print_config:
        _print_config(out_, cfg)
        return
    run_path = out or default_run_dir(name or f"{cfg.model.backbone}-{cfg.data.task}")
    root = settings.cache_root(cache_dir)
    with progress_bridge(out_) as progress:
        hooks = TrainHooks(progress=progress, on_epoch=lambda r: out_.info(_epoch_line(r)),
                           on_info=out_.info, on_warn=out_.warn)  # fmt: skip
        if fold_list:
            summary = finetune_folds(cfg, run_path, fold_list, cache_root=root, resume=resume,
                                     hooks=hooks)  # fmt: skip
            _report_folds(out_, cfg, run_path, summary)
            return
        result = run_finetune(cfg, run_path, cache_root=root, resume=resume, hooks=hooks)
    from pointpeft_cli.engine.distributed import is_main_process

    if is_main_process():  # one result per torchrun launch
        payload = _payload(result, cfg)
        out_.result(payload, human=lambda c: _summary(c, payload), primary=str(result.run_dir))


def _report_folds(out_: Output, cfg: Any, run_path: Path, summary: dict[str, Any]) -> None:
    payload = {"run_dir": str(run_path), "method": cfg.train.method,
               "backbone": cfg.model.backbone, "task": cfg.data.task, **summary}  # fmt: skip
    mean, std = summary["accuracy_mean"], summary["accuracy_std"]
    out_.result(
        payload,
        human=lambda c: c.print(
            f"{len(summary['folds'])} folds: accuracy {mean:.2%} ± {std:.2%} "
            f"({summary['selection']} epoch per fold) -> {run_path}/folds.json"
        ),
        primary=f"{mean:.4f} {std:.4f}",
    )


def _print_config(out_: Output, cfg: Any) -> None:
    from pointpeft_cli.config.presets import dump_config

    if out_.json_mode:
        out_.result({"config": cfg.to_dict()})
    else:
        typer.echo(dump_config(cfg), nl=False)


def _epoch_line(r: dict[str, Any]) -> str:
    test = f"  test {r['test_accuracy']:.2%}" if "test_accuracy" in r else ""
    return (
        f"epoch {r['epoch']:>3}  loss {r['loss']:.4f}  train {r['train_accuracy']:.2%}{test}"
        f"  lr {r['lr']:.2e}  {r['samples_per_second']:.1f} samples/s"
    )


def _payload(result: Any, cfg: Any) -> dict[str, Any]:
    p = result.params
    return {
        "run_dir": str(result.run_dir),
        "method": cfg.train.method,
        "backbone": cfg.model.backbone,
        "task": cfg.data.task,
        "epochs": result.epochs,
        "best": result.best,
        "last": result.last,
        "trainable_params": p["trainable_params"],
        "trainable_params_without_head": p["trainable_params_without_head"],
        "total_params": p["total_params"],
        "seconds": result.seconds,
        "train_samples_per_second": result.train_samples_per_second,
    }


def _summary(console: Any, p: dict[str, Any]) -> None:
    from pointpeft_cli.peft.trainable import peft_line

    best, last = p["best"] or {}, p["last"] or {}
    console.print(
        f"[bold green]Done[/bold green] {p['method']} on {p['task']} ({p['backbone']}), "
        f"{p['epochs']} epochs in {p['seconds']:.0f} s"
    )
    if best:
        console.print(
            f"test accuracy: best {best['accuracy']:.2%} (epoch {best['epoch']}), "
            f"last {last.get('accuracy', 0):.2%}; mean class {best['mean_class_accuracy']:.2%}"
        )
    console.print(peft_line(p["trainable_params"], p["total_params"]))
    console.print(f"run directory: {p['run_dir']}")
    console.print("next:")
    console.print(f"  pointpeft evaluate --run {p['run_dir']}")
    console.print(f"  pointpeft export-adapter --run {p['run_dir']} --out adapters/my-adapter")
