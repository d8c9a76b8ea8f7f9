"""Runtime helpers: device choice, seeds, AMP policy, the LR schedule and atomic writes."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from pointpeft_cli.engine.runtime import amp_dtype, epoch_seed, pick_device, seed_everything
from pointpeft_cli.engine.schedule import CosineWithWarmup
from pointpeft_cli.errors import UsageError
from pointpeft_cli.fsutil import atomic_write, atomic_write_json


def test_pick_device() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA"):
            pick_device("cuda")


def test_amp_is_cuda_only() -> None:
    cpu = torch.device("cpu")
    for mode in ("auto", "bf16", "fp16", "off"):
        assert amp_dtype(cpu, mode) is None


def test_seeds() -> None:
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))
    assert epoch_seed(0, 1) == epoch_seed(0, 1)
    assert len({epoch_seed(0, e) for e in range(50)} | {epoch_seed(1, 0)}) == 51


def test_schedule_shape() -> None:
    s = CosineWithWarmup(base_lr=5e-4, epochs=300, warmup_epochs=10, warmup_lr=1e-6, min_lr=1e-6)
    assert s.lr_at(0) == pytest.approx(1e-6)
    assert s.lr_at(5) == pytest.approx(1e-6 + 5 * (5e-4 - 1e-6) / 10)
    lrs = [s.lr_at(e) for e in range(10, 300)]
    assert all(b <= a for a, b in itertools.pairwise(lrs))  # monotone decay
    expected = 1e-6 + (5e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 150 / 300))
    assert s.lr_at(150) == pytest.approx(expected)
    assert s.lr_at(299) > 1e-6
    short = CosineWithWarmup(base_lr=1e-3, epochs=1, warmup_epochs=10)
    assert short.lr_at(0) == pytest.approx(1e-3)  # a 1-epoch run does not spend it warming up


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    before = target.read_bytes()

    def broken(tmp: Path) -> None:
        tmp.write_text("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
