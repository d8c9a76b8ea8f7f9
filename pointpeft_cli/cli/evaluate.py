"""`pointpeft evaluate`: accuracy, class-mean accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pointpeft_cli.cli.common import progress_bridge, tune_allocator
from pointpeft_cli.cli.options import CacheDirOpt, DataDirOpt, JsonOpt, PointsOpt, TaskOpt
from pointpeft_cli.cli.output import Output

EXAMPLES = """Examples:

  pointpeft evaluate                                          # the latest run under ./runs

  pointpeft evaluate --run runs/point_mae_modelnet40-20261121-101500 --votes 10

  pointpeft evaluate --adapter adapters/modelnet40 --json
"""

Opt = typer.Option


def evaluate(
    run: Annotated[Path | None, Opt("--run", help="Run directory (default: latest).")] = None,
    adapter: Annotated[Path | None, Opt("--adapter", help="Adapter directory.")] = None,
    task: TaskOpt = None,
    data_dir: DataDirOpt = None,
    points: PointsOpt = None,
    checkpoint: Annotated[
        str | None, Opt("--checkpoint", help="best or last (default: the run's selection).")
    ] = None,
    votes: Annotated[int, Opt("--votes", help="Augmented passes, logits averaged (0 = off).")] = 0,
    device: Annotated[str, Opt("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    force: Annotated[bool, Opt("--force", help="Accept a backbone with another sha256.")] = False,
    json_out: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Evaluate a run or an exported adapter on its task's test split."""
    out_ = Output("evaluate", json_out)
    tune_allocator()
    from pointpeft_cli import settings
    from pointpeft_cli.engine import inference
    from pointpeft_cli.engine.rundir import latest_run
    from pointpeft_cli.errors import UsageError

    if run is not None and adapter is not None:
        raise UsageError("pass either --run or --adapter, not both")
    if votes < 0:
        raise UsageError(f"--votes must be >= 0, got {votes}")
    root = settings.cache_root(cache_dir)
    if adapter is not None:
        trained = inference.from_adapter(adapter, root, device, force)
        which = None
    else:
        run = run or latest_run()
        from pointpeft_cli.engine.adapter import read_run_config
        from pointpeft_cli.engine.rundir import RunDir

        which = checkpoint or read_run_config(RunDir(run)).train.select
        trained = inference.from_run(run, which, root, device, force)
    cfg = inference.with_data(trained.cfg, task, data_dir, points)
    with progress_bridge(out_) as progress:
        report = inference.evaluate_trained(trained, cfg, root, votes, progress=progress)
    payload = {"source": trained.source, "checkpoint": which, "votes": votes, **report.to_dict()}
    out_.result(payload, human=lambda c: _table(c, payload), primary=f"{report.accuracy:.4f}")


def _table(console: Any, p: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{p['source']} ({p['num_samples']} test samples)")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, acc in p["per_class"].items():
        table.add_row(name, "-" if acc is None else f"{acc:.2%}")
    console.print(table)
    console.print(
        f"overall accuracy {p['accuracy']:.2%}   mean class accuracy "
        f"{p['mean_class_accuracy']:.2%}   votes {p['votes']}"
    )
