"""SIGKILL at chosen steps and in the middle of checkpoint writes, then `--resume`: the final
adapter is bit-identical to an uninterrupted run. Also the NaN-loss policy (stop | skip).

Kills go through tests/reliability/faultrun.py (a real SIGKILL at a deterministic point). Each
chain keeps killing one run directory at a new point and resuming it, so every trial starts from
what the previous kill left on disk; the kill points are drawn at random from a seeded generator
(set RELIABILITY_SEED to draw others).
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.cli_helpers import run_cli
from tests.reliability.harness import (
    STEPS_PER_EPOCH,
    TINY,
    TINY_EPOCHS,
    Proc,
    assert_clean_failure,
    cli_command,
    run_proc,
)

SEED = int(os.environ.get("RELIABILITY_SEED", "8"))
TIMING = ("samples_per_second", "train_seconds")
TOTAL_STEPS = STEPS_PER_EPOCH * TINY_EPOCHS


def _finetune(out: Path, cache: Path, fault: str | None = None, resume: bool = False) -> Proc:
    args = ["finetune", "--resume", "--out", str(out), "--json"] if resume else [
        "finetune", *TINY, "--epochs", str(TINY_EPOCHS), "--out", str(out), "--json"]  # fmt: skip
    return run_proc(cli_command(*args, fault=fault), cache)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run in a subprocess with the same environment as the killed ones."""
    base = tmp_path_factory.mktemp("reference")
    res = _finetune(base / "run", base / "cache", fault="none")
    assert res.returncode == 0, res.stderr
    return base / "run"


def _completed_epochs(run: Path) -> int:
    """The epoch `--resume` continues after (0 when no epoch was saved)."""
    state = run / "checkpoints" / "last.pt"
    if not state.is_file():
        return 0
    return int(torch.load(state, map_location="cpu", weights_only=True)["epoch"])


def _kill(run: Path, cache: Path, fault: str, resume: bool) -> None:
    res = _finetune(run, cache, fault=fault, resume=resume)
    assert res.returncode == -signal.SIGKILL, (fault, res.returncode, res.stderr[-2000:])


def _assert_same_as(reference: Path, run: Path) -> None:
    """Bit-identical tensors (and files) and the same per-epoch metrics, timings aside."""
    for name in ("best.safetensors", "last.safetensors"):
        a, b = reference / "checkpoints" / name, run / "checkpoints" / name
        ta, tb = load_file(str(a)), load_file(str(b))
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta), f"{name} differs"
        assert a.read_bytes() == b.read_bytes(), name

    def metrics(path: Path) -> list[dict]:
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]

    assert metrics(run) == metrics(reference)
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert not list(run.rglob("*.incomplete")), "a temp file of a killed write was left behind"


def _finish_and_compare(reference: Path, run: Path, cache: Path, tmp_path: Path) -> None:
    res = _finetune(run, cache, resume=True)
    assert res.returncode == 0, res.stderr
    assert res.json()["epochs"] == TINY_EPOCHS
    _assert_same_as(reference, run)
    for which, src in (("ref", reference), ("cut", run)):
        out = run_cli("export-adapter", "--run", str(src), "--out", str(tmp_path / which),
                      "--checkpoint", "last", "--json")  # fmt: skip
        assert out.exit_code == 0, out.stderr
    a = (tmp_path / "ref" / "adapter_model.safetensors").read_bytes()
    assert a == (tmp_path / "cut" / "adapter_model.safetensors").read_bytes()


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_is_bit_exact(reference: Path, tmp_path: Path) -> None:
    steps = sorted(random.Random(SEED).sample(range(1, TOTAL_STEPS + 1), 6))
    run, cache = tmp_path / "run", tmp_path / "cache"
    done = 0  # epochs saved before the current kill
    for i, step in enumerate(steps):
        local = step - done * STEPS_PER_EPOCH  # optimizer steps this process makes before dying
        _kill(run, cache, f"step:{local}", resume=i > 0)
        done = _completed_epochs(run)
        assert done == (step - 1) // STEPS_PER_EPOCH, (step, done)
        if done:  # what is on disk is a consistent, loadable epoch end
            assert len((run / "metrics.jsonl").read_text().splitlines()) in (done, done - 1)
    _finish_and_compare(reference, run, cache, tmp_path)


# (fault, epochs saved after the kill). Each process resumes from what the previous kill left.
WRITE_FAULTS = [
    ("replace:*.h5:1:torn", 0),  # mid-write of the memory bank: nothing of the run saved yet
    ("replace:best.safetensors:1:torn", 0),  # first checkpoint, torn
    ("replace:last.pt:1:torn", 0),  # the resume state of epoch 1, torn
    ("replace:last.pt:2:before", 1),  # epoch 1 saved; epoch 2's state complete, not renamed
    ("replace:last.safetensors:1:after", 1),  # epoch 2 tensors renamed, its resume state not
    ("replace:last.pt:1:after", 2),  # epoch 2 state renamed, metrics.jsonl not rewritten
    ("replace:metrics.jsonl:1:torn", 2),  # resuming: the metrics rewrite from the state, torn
    ("replace:metrics.jsonl:2:torn", 3),  # epoch 3 saved, its metrics torn
    ("replace:run.json:2:before", 3),  # every epoch saved, the final run.json not written
]


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_then_resume_is_bit_exact(
    reference: Path, tmp_path: Path
) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"  # a fresh cache: the bank is built here
    for i, (fault, saved) in enumerate(WRITE_FAULTS):
        _kill(run, cache, fault, resume=i > 0)
        assert _completed_epochs(run) == saved, fault
        for name in ("best.safetensors", "last.safetensors"):  # never a torn file in place
            path = run / "checkpoints" / name
            if path.exists():
                load_file(str(path))
    assert list(run.rglob("*.incomplete")), "the torn/complete temp files are still there"
    assert (
        not (cache / "memory_banks").exists()
        or len(list((cache / "memory_banks").glob("*.h5"))) <= 1
    )
    _finish_and_compare(reference, run, cache, tmp_path)
    assert not list((cache / "memory_banks").glob("*.incomplete"))


def _poison_step(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """Makes the `at`-th training batch hold NaN coordinates (so its loss is NaN)."""
    from pointpeft_cli.engine import train as train_mod

    real = train_mod._step_inputs
    seen = {"n": 0}

    def step(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen["n"] += 1
        points, labels, index = real(*args, **kwargs)
        if seen["n"] == at:
            points = torch.full_like(points, float("nan"))
        return points, labels, index

    monkeypatch.setattr(train_mod, "_step_inputs", step)


def _inproc(out: Path, *extra: str):
    return run_cli("finetune", *TINY, "--epochs", str(TINY_EPOCHS), "--out", str(out), "--json",
                   *extra)  # fmt: skip


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = _inproc(tmp_path / "clean")
    assert clean.exit_code == 0, clean.stderr
    with monkeypatch.context() as patched:  # (undo() would also drop the isolated home)
        _poison_step(patched, STEPS_PER_EPOCH + 2)  # inside epoch 2
        res = _inproc(tmp_path / "nan")
    error = assert_clean_failure(res, 1, "loss", "epoch 2")
    assert error["type"] == "TrainingDiverged"
    assert "nan_policy=skip" in error["hint"]
    run = tmp_path / "nan"
    assert json.loads((run / "run.json").read_text())["status"] == "diverged"
    assert _completed_epochs(run) == 1
    resumed = run_cli("finetune", "--resume", "--out", str(run), "--json")
    assert resumed.exit_code == 0, resumed.stderr
    # the NaN step changed nothing, so the resumed run is the clean run, bit for bit
    a = load_file(str(tmp_path / "clean" / "checkpoints" / "last.safetensors"))
    b = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_policy_skip_warns_and_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison_step(monkeypatch, 3)
    res = _inproc(tmp_path / "skip", "--set", "train.nan_policy=skip")
    assert res.exit_code == 0, res.stderr
    assert "Warning:" in res.stderr and "step skipped" in res.stderr
    rows = [json.loads(x) for x in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in rows] == [1, 0, 0]
    tensors = load_file(str(tmp_path / "skip" / "checkpoints" / "last.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values())
    bad = run_cli("finetune", *TINY, "--set", "train.nan_policy=ignore", "--json")
    assert_clean_failure(bad, 2, "nan_policy")
