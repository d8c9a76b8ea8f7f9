"""Shared option aliases so every command spells its common flags the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (nothing else on stdout).")
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Cache root (default: $POINTPEFT_HOME, else the platform cache directory).",
        show_default=False,
    ),
]
OfflineOpt = Annotated[
    bool,
    typer.Option("--offline", help="Never open a socket (same as POINTPEFT_OFFLINE=1)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed.", show_default=False)]
PresetOpt = Annotated[
    str | None, typer.Option("--preset", help="Preset name (see presets/).", show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config key: --set train.lr=1e-3 (repeatable).", show_default=False
    ),
]
BackboneOpt = Annotated[
    str | None,
    typer.Option("--backbone", help="point-mae, point-bert or point-mae-mini.", show_default=False),
]
TaskOpt = Annotated[
    str | None,
    typer.Option(
        "--task",
        help="modelnet40, scanobjectnn-objbg|objonly|hardest, modelnet40-fewshot, shapes, folder.",
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data already on disk in the upstream layout.", show_default=False
    ),
]
PointsOpt = Annotated[
    int | None,
    typer.Option("--points", help="Points per cloud the model sees.", show_default=False),
]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Training epochs.")]
BatchSizeOpt = Annotated[int | None, typer.Option("--batch-size", help="Batch size.")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")]
MaybeDeviceOpt = Annotated[
    str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", show_default=False)
]
RunOutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Run directory (default: runs/...).", show_default=False),
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")]
PrintConfigOpt = Annotated[
    bool, typer.Option("--print-config", help="Show the resolved config and exit.")
]
