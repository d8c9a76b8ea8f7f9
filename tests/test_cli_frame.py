"""The CLI frame: version, help speed, the error -> exit-code map, and the JSON failure shape."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import typer

from pointpeft_cli import __version__
from pointpeft_cli.cli.app import app
from pointpeft_cli.cli.options import JsonOpt
from pointpeft_cli.cli.output import Output
from pointpeft_cli.errors import (
    AssetNotCachedError,
    ConfigError,
    IntegrityError,
    PointPeftError,
    RunInterrupted,
)
from tests.cli_helpers import run_cli


def test_version_line() -> None:
    res = run_cli("--version")
    assert res.exit_code == 0
    assert res.stdout.startswith(f"pointpeft {__version__} (torch ")
    assert "cuda: " in res.stdout


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from pointpeft_cli.cli.app import app; "
        "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--help']); "
        "assert r.exit_code == 0, r.output; print('torch' in sys.modules)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "torch must only be imported inside command bodies"
    assert time.perf_counter() - start < 10


def test_module_entry_point_runs() -> None:
    env = {**os.environ, "POINTPEFT_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "pointpeft_cli", "--help"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0
    assert "Usage" in out.stdout


def test_unknown_command_is_usage_error_with_json() -> None:
    res = run_cli("no-such-command", "--json")
    assert res.exit_code == 2
    obj = res.json()
    assert obj["ok"] is False
    assert obj["error"]["exit_code"] == 2
    assert "no-such-command" in obj["error"]["message"]


@pytest.fixture
def raising_app(monkeypatch: pytest.MonkeyPatch):
    """Registers a throw-away command that raises the exception it is told to."""
    errors = {
        "config": ConfigError("unknown key 'trian.lr'", hint="did you mean 'train.lr'?"),
        "missing": AssetNotCachedError("point-mae is not cached", hint="run download"),
        "integrity": IntegrityError("sha256 mismatch"),
        "interrupt": RunInterrupted("interrupted"),
        "internal": RuntimeError("boom"),
        "keyboard": KeyboardInterrupt(),
    }

    def boom(kind: str, json: JsonOpt = False) -> None:
        Output("boom", json_mode=json)
        raise errors[kind]

    app.command("boom")(boom)
    yield
    app.registered_commands.pop()


@pytest.mark.parametrize(
    ("kind", "code", "type_name"),
    [
        ("config", 2, "ConfigError"),
        ("missing", 3, "AssetNotCachedError"),
        ("integrity", 4, "IntegrityError"),
        ("interrupt", 130, "RunInterrupted"),
        ("internal", 1, "RuntimeError"),
        ("keyboard", 130, "KeyboardInterrupt"),
    ],
)
def test_error_map(raising_app: None, kind: str, code: int, type_name: str) -> None:
    res = run_cli("boom", kind, "--json")
    assert res.exit_code == code
    obj = res.json()
    assert obj == {
        "ok": False,
        "command": "boom",
        "error": {**obj["error"], "type": type_name, "exit_code": code},
    }
    assert isinstance(obj["error"]["message"], str) and obj["error"]["message"]
    assert "Traceback" not in res.stderr
    assert "Error:" in res.stderr


def test_hint_is_rendered(raising_app: None) -> None:
    res = run_cli("boom", "config")
    assert res.exit_code == 2
    assert res.stdout == ""
    assert "unknown key 'trian.lr'" in res.stderr
    assert "did you mean 'train.lr'?" in res.stderr


def test_debug_shows_traceback(raising_app: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTPEFT_DEBUG", "1")
    res = run_cli("boom", "internal")
    assert res.exit_code == 1
    assert "Traceback" in res.stderr


def test_errors_carry_documented_codes() -> None:
    assert PointPeftError("x").exit_code == 1
    assert issubclass(AssetNotCachedError, FileNotFoundError)
    assert isinstance(typer.Exit(3), Exception)
