"""Helpers for CLI tests: run the app in-process and split stdout/stderr."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from typer.testing import CliRunner

from pointpeft_cli.cli.app import app


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """The single JSON object on stdout (fails if there is anything else)."""
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        assert len(lines) == 1, f"expected one JSON line on stdout, got: {self.stdout!r}"
        return json.loads(lines[0])


def run_cli(*args: str) -> CliResult:
    """Invoke `pointpeft ARGS...` in-process."""
    runner = CliRunner()
    res = runner.invoke(app, list(args), catch_exceptions=False)
    return CliResult(res.exit_code, res.stdout, res.stderr)
