"""Reliability suite: one torch thread in-process (as the subprocesses use), restored after."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.reliability.harness import TINY


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # On a shared 2-core runner two intra-op threads per process make these tiny runs ~5x slower.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A finished one-epoch run (`run/`) and its exported adapter (`adapter/`)."""
    base = tmp_path_factory.mktemp("trained")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cache = ["--cache-dir", str(base / "cache")]
    res = run_cli("finetune", *TINY, "--epochs", "1", "--out", str(base / "run"), "--json", *cache)
    assert res.exit_code == 0, res.stderr
    res = run_cli("export-adapter", "--run", str(base / "run"), "--out", str(base / "adapter"),
                  "--json", *cache)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    torch.set_num_threads(before)
    yield base


@pytest.fixture
def run_dir(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained / "run", tmp_path / "run"))


@pytest.fixture
def adapter(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained / "adapter", tmp_path / "adapter"))
