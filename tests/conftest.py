"""Test isolation: a private cache, offline by default, and no sockets beyond loopback."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _guarded(real):
    def connect(self, address):  # type: ignore[no-untyped-def]
        if not _is_loopback(address):
            raise OSError(f"tests may not open non-loopback sockets (tried {address!r})")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "pointpeft-home"
    monkeypatch.setenv("POINTPEFT_HOME", str(home))
    monkeypatch.setenv("POINTPEFT_OFFLINE", "1")
    monkeypatch.delenv("POINTPEFT_DEBUG", raising=False)
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))
    from pointpeft_cli.cli.output import STATE

    STATE.verbose = STATE.quiet = STATE.debug = False
    STATE.current = None
    yield


@pytest.fixture
def cache_home(tmp_path: Path) -> Path:
    """The isolated cache root the CLI uses in this test."""
    return tmp_path / "pointpeft-home"


@pytest.fixture(scope="session")
def official_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ONE full-size (116 MB) Point-MAE pretrain.pth in the upstream layout, shared by the suite."""
    from tests.ckpt_factory import write_official_checkpoint

    path = tmp_path_factory.getbasetemp() / "official" / "pretrain.pth"
    if not path.exists():
        write_official_checkpoint(path, layout="mae_pretrain", seed=0)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the checkout (design docs and real fixtures)."""
    here = Path(__file__).resolve().parents[1]
    for cand in (here / "shared", here.parent / "shared"):
        if cand.is_dir():
            return cand
    pytest.skip("../shared is not present")
    raise AssertionError


@pytest.fixture
def restore_threads():  # type: ignore[no-untyped-def]
    """Keep the process's torch thread count across a test that sets its own (run configs with
    `train.threads` do, as the shipped pretraining preset does)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_net = pytest.mark.skip(reason="network tests are skipped by default")
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip_net)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
