"""Shared helpers of the reliability suite: tree snapshots, failure checks, subprocess runs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cli_helpers import CliResult

REPO = Path(__file__).resolve().parents[2]

# A tiny random-init point-mae-mini run on the procedural task: 16 training clouds in batches
# of 4 = 4 optimizer steps per epoch, 3 epochs (12 steps), a few seconds per process.
# Settings the tests rely on are explicit, whatever the preset says.
TINY = [
    "--task", "shapes", "--backbone", "point-mae-mini", "--set", "model.pretrained=false",
    "--set", "data.shapes_train_size=16", "--set", "data.shapes_test_size=12",
    "--points", "256", "--set", "model.num_group=16", "--set", "model.group_size=16",
    "--set", "train.warmup_epochs=1", "--set", "train.eval_every=1", "--batch-size", "4",
    "--seed", "5",
]  # fmt: skip
TINY_EPOCHS = 3
STEPS_PER_EPOCH = 4
# the same model and data for build-memory-bank (it has no training flags)
TINY_BANK = [
    "--task", "shapes", "--backbone", "point-mae-mini", "--set", "model.pretrained=false",
    "--set", "data.shapes_train_size=16", "--set", "data.shapes_test_size=12",
    "--points", "256", "--set", "model.num_group=16", "--set", "model.group_size=16",
    "--seed", "5",
]  # fmt: skip


def tree_snapshot(*roots: Path) -> dict[str, str]:
    """Every path under `roots`: a file's sha256, `dir`, or `link:<target>` (byte-for-byte)."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            out[str(root)] = "absent"
            continue
        out[str(root)] = "dir" if root.is_dir() else _digest(root)
        for path in sorted(root.rglob("*")) if root.is_dir() else ():
            key = f"{root}/{path.relative_to(root).as_posix()}"
            if path.is_symlink():
                out[key] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                out[key] = "dir"
            else:
                out[key] = _digest(path)
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_EMPTY = hashlib.sha256(b"").hexdigest()


def assert_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    """Nothing changed, except that an empty per-asset lock file may now exist.

    Lock files (`<cache>/.locks/<asset>.lock`) are never written to and never deleted (see
    store/locking.py); they coordinate processes and are not cache content.
    """
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    allowed = {
        k
        for k in changed
        if k not in before
        and ("/.locks/" in k or k.endswith("/.locks"))
        and after[k] in ("dir", _EMPTY)
    }
    # a cache root that did not exist may now exist, holding nothing but lock files
    for k in changed:
        inside = [c for c in after if c.startswith(k + "/")]
        if before.get(k) == "absent" and inside and all(c in allowed for c in inside):
            allowed.add(k)
    assert changed == allowed, f"changed: {sorted(changed - allowed)}"


def assert_clean_failure(res: CliResult, code: int, *words: str) -> dict[str, Any]:
    """The documented exit code, a one-line message naming the problem, and no traceback."""
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr
    payload = res.json()
    assert payload["ok"] is False
    error = payload["error"]
    assert error["exit_code"] == code
    message = error["message"]
    assert message and "\n" not in message, message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return error


@dataclass
class Proc:
    """A finished subprocess."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        assert len(lines) == 1, self.stdout
        return json.loads(lines[0])


def subprocess_env(cache_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: the test's cache, offline, one thread, repo on path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POINTPEFT_")}
    env.update(
        POINTPEFT_HOME=str(cache_home),
        POINTPEFT_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    )
    env.update(extra)
    return env


def cli_command(*args: str, fault: str | None = None) -> list[str]:
    """argv for `pointpeft ARGS`, optionally through the fault injector (faultrun.py)."""
    if fault is None:
        return [sys.executable, "-m", "pointpeft_cli", *args]
    return [sys.executable, "-m", "tests.reliability.faultrun", fault, "--", *args]


def run_proc(args: list[str], cache_home: Path, timeout: float = 120, **env: str) -> Proc:
    """Run a CLI subprocess to completion (or death) and capture its output."""
    proc = subprocess.run(
        args,
        cwd=REPO,
        env=subprocess_env(cache_home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Proc(proc.returncode, proc.stdout, proc.stderr)
