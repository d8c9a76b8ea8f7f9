"""`pointpeft predict`: classify point files with an exported adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pointpeft_cli.cli.common import tune_allocator
from pointpeft_cli.cli.options import CacheDirOpt, JsonOpt
from pointpeft_cli.cli.output import Output

EXAMPLES = """Examples:

  pointpeft predict --adapter adapters/shapes chair.ply table.npy

  pointpeft predict --adapter adapters/modelnet40 scans/*.xyz --json
"""

Opt = typer.Option


def predict(
    files: Annotated[list[Path], typer.Argument(help=".npy, .txt, .xyz or .ply point files.")],
    adapter: Annotated[Path, Opt("--adapter", help="Adapter directory.")],
    device: Annotated[str, Opt("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    force: Annotated[bool, Opt("--force", help="Accept a backbone with another sha256.")] = False,
    json_out: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Classify point clouds with an adapter (top-5 classes and scores per file)."""
    out_ = Output("predict", json_out)
    tune_allocator()
    from pointpeft_cli import settings
    from pointpeft_cli.engine import inference

    trained = inference.from_adapter(adapter, settings.cache_root(cache_dir), device, force)
    predictions = inference.predict_files(trained, files)
    out_.result(
        {"predictions": predictions},
        human=lambda c: _show(c, predictions),
        primary="\n".join(f"{p['file']}\t{p['label']}" for p in predictions),
    )


def _show(console: Any, predictions: list[dict[str, Any]]) -> None:
    for p in predictions:
        others = ", ".join(f"{n} {s:.2f}" for n, s in p["top5"][1:])
        console.print(f"{p['file']}: [bold]{p['label']}[/bold] {p['score']:.2f}  ({others})")
