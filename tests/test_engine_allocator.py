"""The training allocator settings: when they apply, what they set, and what they change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from cli_helpers import run_cli

from pointpeft_cli.engine import allocator
from pointpeft_cli.errors import UsageError


class FakeLibc:
    """Records `mallopt` calls and answers each with `answer`."""

    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    """A process where nothing was applied yet, glibc faked, and no user malloc settings."""
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_glibc", lambda: (libc, "2.99"))
    for name in (*allocator._USER_MALLOC_ENV, "GLIBC_TUNABLES", "LD_PRELOAD", "POINTPEFT_MALLOC"):
        monkeypatch.delenv(name, raising=False)
    return libc


def test_tuned_sets_mmap_threshold_and_disables_trimming(fresh: FakeLibc) -> None:
    state = allocator.configure_allocator()
    assert state.tuned
    assert fresh.calls == [(allocator.M_MMAP_THRESHOLD, 1 << 30), (allocator.M_TRIM_THRESHOLD, -1)]
    assert "glibc 2.99" in state.detail


def test_applied_once_per_process(fresh: FakeLibc) -> None:
    first = allocator.configure_allocator()
    assert allocator.configure_allocator("default") is first
    assert len(fresh.calls) == 2


def test_default_mode_leaves_malloc_alone(fresh: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTPEFT_MALLOC", "default")
    state = allocator.configure_allocator()
    assert not state.tuned and "POINTPEFT_MALLOC=default" in state.detail
    assert fresh.calls == []


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("MALLOC_MMAP_THRESHOLD_", "131072", "MALLOC_MMAP_THRESHOLD_ is set"),
        ("MALLOC_ARENA_MAX", "2", "MALLOC_ARENA_MAX is set"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0", "GLIBC_TUNABLES"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc is preloaded"),
    ],
)
def test_user_settings_win(
    fresh: FakeLibc, monkeypatch: pytest.MonkeyPatch, name: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(name, value)
    state = allocator.configure_allocator()
    assert not state.tuned and reason in state.detail
    assert fresh.calls == []


def test_unrelated_tunables_do_not_count(fresh: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
    assert allocator.configure_allocator().tuned


def test_not_glibc(fresh: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    state = allocator.configure_allocator()
    assert not state.tuned and "not glibc" in state.detail


def test_refused_mallopt_is_reported(fresh: FakeLibc) -> None:
    fresh.answer = 0
    state = allocator.configure_allocator()
    assert not state.tuned and "refused" in state.detail
    assert len(fresh.calls) == 1  # stops at the first refusal


def test_unknown_mode_is_a_usage_error(fresh: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTPEFT_MALLOC", "jemalloc")
    with pytest.raises(UsageError, match="POINTPEFT_MALLOC"):
        allocator.configure_allocator()
    assert fresh.calls == []


def test_unknown_mode_exits_2_from_a_command(
    fresh: FakeLibc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POINTPEFT_MALLOC", "fast")
    res = run_cli("finetune", "--json")
    assert res.exit_code == 2
    error = json.loads(res.stdout)["error"]
    assert "POINTPEFT_MALLOC='fast'" in error["message"]
    assert "POINTPEFT_MALLOC=default" in error["hint"]


PROBE = textwrap.dedent(
    """
    import json, resource, torch
    from pointpeft_cli.engine.allocator import configure_allocator
    state = configure_allocator()
    faults = []
    for step in range(8):  # a "step" that allocates and frees three large activations
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        kept = [torch.ones(mib * 2**18) for mib in (48, 96, 40)]
        del kept
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
    print(json.dumps({"tuned": state.tuned, "faults": faults}))
    """
)


def _probe(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["POINTPEFT_MALLOC"] = mode
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
def test_tuned_malloc_stops_refaulting_large_buffers() -> None:
    tuned, default = _probe("tuned"), _probe("default")
    assert tuned["tuned"] and not default["tuned"]
    # glibc's default maps every block above 32 MiB afresh: each step faults all 184 MiB in
    assert min(default["faults"][3:]) > 40_000
    # tuned, freed blocks serve the next steps once the heap has grown to fit them (now and then
    # one block still lands on fresh pages: measured 0-2 of the 15 in steps 3-7)
    assert sum(default["faults"][3:]) > 5 * 40_000
    assert sum(tuned["faults"][3:]) < 0.3 * sum(default["faults"][3:])
