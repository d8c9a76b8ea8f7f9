"""`pointpeft inspect`: the model a run would build, its parameter counts, its key report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pointpeft_cli.cli.options import BackboneOpt, JsonOpt, TaskOpt
from pointpeft_cli.cli.output import Output
from pointpeft_cli.errors import DataError, UsageError

EXAMPLES = (
    "[bold]Examples[/bold]\n\n  pointpeft inspect --backbone point-mae --task scanobjectnn-hardest"
    "\n\n  pointpeft inspect --backbone point-mae --task modelnet40 --method full --json"
    "\n\n  pointpeft inspect --backbone point-mae --task modelnet40 --checkpoint pretrain.pth"
)

MethodOpt = Annotated[str, typer.Option("--method", help="point-peft (default), full or linear.")]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="A pre-trained .pth (read with weights_only) or .safetensors file to match.",
        show_default=False,
    ),
]
NumClassesOpt = Annotated[
    int | None,
    typer.Option(
        "--num-classes", help="Head size for tasks whose classes come from the data.",
        show_default=False,
    ),
]  # fmt: skip

_SHOWN = 8  # key names listed per category in human output


def _required(value: str | None, flag: str, choices: str) -> str:
    if not value:
        raise UsageError(f"inspect needs {flag}", hint=f"pass {flag} ({choices})")
    return value


def _human(payload: dict[str, Any]) -> Any:
    def render(console: Console) -> None:
        table = Table(title=f"{payload['backbone']} / {payload['task']} / {payload['method']}")
        table.add_column("group")
        table.add_column("params", justify="right")
        table.add_column("trainable", justify="right")
        for name, count in payload["groups"].items():
            trained = payload["trainable_groups"].get(name, 0)
            table.add_row(name, f"{count:,d}", f"{trained:,d}")
        console.print(table)
        console.print(payload["summary"])
        console.print(f"without head: {payload['summary_without_head']}")
        if "matched" in payload:
            console.print(f"checkpoint {payload['checkpoint']}:")
            for key in ("matched", "missing", "unexpected", "mismatched"):
                names = payload[key]
                more = f", ... (+{len(names) - _SHOWN})" if len(names) > _SHOWN else ""
                listed = ", ".join(names[:_SHOWN])
                console.print(f"  {key}: {len(names)}" + (f" ({listed}{more})" if names else ""))

    return render


def inspect(
    backbone: BackboneOpt = None,
    task: TaskOpt = None,
    method: MethodOpt = "point-peft",
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show the model a run would build: parameters per group and the trainable share."""
    out = Output("inspect", json_)
    from pointpeft_cli.models.checkpoint import read_state_file
    from pointpeft_cli.models.registry import create_model, list_models
    from pointpeft_cli.peft.trainable import count_parameters, peft_line
    from pointpeft_cli.tasks import TASKS, get_task

    name = _required(backbone, "--backbone", ", ".join(list_models()))
    spec = get_task(_required(task, "--task", ", ".join(TASKS)))
    classes = num_classes or spec.num_classes
    if not classes:
        raise UsageError(f"task {spec.name} reads its classes from the data", "pass --num-classes")
    model = create_model(
        name, num_classes=classes, method=method, num_group=spec.num_group,
        group_size=spec.group_size,
    )  # fmt: skip
    counts = count_parameters(model)
    payload: dict[str, Any] = {
        "backbone": name, "task": spec.name, "method": method, "num_classes": classes,
        "num_group": model.num_group, "group_size": model.group_size, **counts.to_dict(),
        "summary": peft_line(counts.trainable, counts.total),
        "summary_without_head": peft_line(counts.trainable_without_head, counts.total),
    }  # fmt: skip
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise DataError(f"checkpoint {checkpoint} does not exist", hint="check the path")
        report = model.load_pretrained(read_state_file(checkpoint), source=str(checkpoint))
        payload.update(checkpoint=str(checkpoint), **report.to_dict())
    out.result(payload, human=_human(payload), primary=payload["summary"])
