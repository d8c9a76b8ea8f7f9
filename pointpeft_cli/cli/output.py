"""Rendering: human output, logs and progress on stderr; `--json` = one JSON object on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape


@dataclass
class _State:
    """Process-wide verbosity chosen by the root options, and the command now running."""

    verbose: bool = False
    quiet: bool = False
    debug: bool = False
    current: Output | None = None


STATE = _State()


def stderr_console() -> Console:
    """A console bound to the current stderr (CliRunner swaps streams per invocation)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def printable(text: str) -> str:
    """`text` as valid Unicode: bytes of non-UTF-8 file names (surrogate escapes) become `\\xNN`."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()  # numpy / torch scalars
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


def emit_json(obj: dict[str, Any]) -> None:
    """Print exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(_to_jsonable(obj), sort_keys=False) + "\n")
    sys.stdout.flush()


class _NullProgress:
    """Stands in for rich.progress.Progress when no bar is shown."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None


class Output:
    """One command's output channel."""

    def __init__(self, command: str, json_mode: bool = False) -> None:
        self.command = command
        self.json_mode = json_mode
        self.quiet = STATE.quiet
        self.console = stderr_console()
        STATE.current = self

    def info(self, message: str) -> None:
        """A human line on stderr (hidden by -q)."""
        if not self.quiet:
            self.console.print(message)

    def warn(self, message: str) -> None:
        """A warning on stderr (shown even with -q)."""
        self.console.print(f"[yellow]Warning:[/yellow] {escape(printable(message))}")

    @property
    def show_progress(self) -> bool:
        return not (self.json_mode or self.quiet) and self.console.is_terminal

    @contextmanager
    def progress(self, transient: bool = True, unit: str = "bytes") -> Iterator[Any]:
        """A Rich progress bar on stderr, or a silent stand-in for --json, -q and non-TTY.

        `unit` is "bytes" (transfer size and speed) or "items" (count and elapsed time).
        """
        if not self.show_progress:
            yield _NullProgress()
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        middle = (
            (DownloadColumn(), TransferSpeedColumn())
            if unit == "bytes"
            else (MofNCompleteColumn(), TimeElapsedColumn())
        )
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), *middle,
                   TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=self.console, transient=transient) as bar:
            yield bar

    def result(
        self,
        payload: dict[str, Any],
        human: Callable[[Console], None] | None = None,
        primary: Any = None,
    ) -> None:
        """Report success: JSON on stdout, the primary value with -q, else `human` on stderr."""
        if self.json_mode:
            emit_json({"ok": True, "command": self.command, **payload})
        elif self.quiet:
            if primary is not None:
                sys.stdout.write(f"{primary}\n")
        elif human is not None:
            human(self.console)


def render_error(
    err_type: str, message: str, exit_code: int, hint: str | None, json_mode: bool | None = None
) -> None:
    """Report a failure: `Error:`/`Hint:` on stderr, and the JSON failure object with --json."""
    message = printable(message)
    hint = printable(hint) if hint else hint
    console = stderr_console()
    # messages quote file names and shapes such as `[S, N, 3]`: never read them as markup
    console.print(f"[bold red]Error:[/bold red] {escape(message)}", markup=True, highlight=False)
    if hint:
        console.print(f"[bold]Hint:[/bold] {escape(hint)}", highlight=False)
    current = STATE.current
    if json_mode is None:
        json_mode = current.json_mode if current is not None else "--json" in sys.argv[1:]
    if json_mode:
        payload: dict[str, Any] = {"type": err_type, "message": message, "exit_code": exit_code}
        if hint:
            payload["hint"] = hint
        obj: dict[str, Any] = {"ok": False, "error": payload}
        if current is not None:
            obj = {"ok": False, "command": current.command, "error": payload}
        emit_json(obj)
