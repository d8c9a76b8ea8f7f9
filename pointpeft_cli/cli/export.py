"""`pointpeft export-adapter`: a run's trainable tensors, config and memory bank, portable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pointpeft_cli.cli.options import CacheDirOpt, JsonOpt
from pointpeft_cli.cli.output import Output

EXAMPLES = """Examples:

  pointpeft export-adapter --run runs/point_mae_mini_shapes-20261121-101500 --out adapters/shapes

  pointpeft export-adapter --run runs/my-run --checkpoint last --out adapters/last --json
"""

Opt = typer.Option


def export_adapter(
    run: Annotated[Path, Opt("--run", help="Run directory to export from.")],
    out: Annotated[Path, Opt("--out", help="Adapter directory to write.")],
    checkpoint: Annotated[
        str | None, Opt("--checkpoint", help="best or last (default: the run's selection).")
    ] = None,
    force: Annotated[bool, Opt("--force", help="Replace a non-empty --out.")] = False,
    json_out: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Export a run's adapter: trainable tensors only, the config, and the memory bank."""
    out_ = Output("export-adapter", json_out)
    from pointpeft_cli.engine.adapter import export_adapter as run_export
    from pointpeft_cli.engine.adapter import read_run_config
    from pointpeft_cli.engine.rundir import RunDir

    which = checkpoint or read_run_config(RunDir(run)).train.select
    path = run_export(run, out, which, force=force)
    files = sorted(p for p in path.iterdir() if p.is_file())
    payload = {
        "path": str(path),
        "checkpoint": which,
        "bytes": sum(p.stat().st_size for p in files),
        "files": [{"name": p.name, "bytes": p.stat().st_size} for p in files],
    }
    out_.result(
        payload,
        human=lambda c: c.print(
            f"adapter ({which}) -> {path}: "
            + ", ".join(f"{f['name']} {f['bytes'] / 1e6:.2f} MB" for f in payload["files"])
        ),
        primary=str(path),
    )
