"""Streaming downloads over a loopback server: hashing, Range resume, restarts, failures."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest

from pointpeft_cli.errors import (
    AssetNotCachedError,
    AssetUnavailableError,
    ChecksumMismatchError,
    NetworkError,
)
from pointpeft_cli.store.download import FetchOptions, fetch_url
from tests.http_server import FileServer, ServedFile

DATA = os.urandom(3 * 1024 * 1024 + 123)  # several 1 MiB chunks plus a ragged tail
SHA = hashlib.sha256(DATA).hexdigest()
OPTS = FetchOptions(asset_id="point-mae", retry_delay=0.0)


def _partials(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_plain_download_hashes_while_streaming(tmp_path: Path) -> None:
    with FileServer({"f.bin": ServedFile(DATA)}) as srv:
        got = fetch_url(srv.url("f.bin"), tmp_path, "f.bin", OPTS)
    assert got.sha256 == SHA and got.bytes == len(DATA) and not got.resumed
    assert got.path.read_bytes() == DATA
    assert got.path.name.startswith("f.bin.") and got.path.name.endswith(".incomplete")


def test_dropped_connection_resumes_with_range(tmp_path: Path) -> None:
    cut = 1_500_000
    with FileServer({"f.bin": ServedFile(DATA)}, drop_after=cut) as srv:
        got = fetch_url(srv.url("f.bin"), tmp_path, "f.bin", OPTS)
    assert got.sha256 == SHA and got.resumed
    assert [r[1:] for r in srv.requests] == [(None, 200), (f"bytes={cut}-", 206)]


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    with FileServer({"f.bin": ServedFile(DATA)}, range_support=False, drop_after=1000) as srv:
        got = fetch_url(srv.url("f.bin"), tmp_path, "f.bin", OPTS)
    assert got.sha256 == SHA and not got.resumed
    assert srv.requests[1] == ("f.bin", "bytes=1000-", 200)  # asked, refused, restarted


def test_partial_survives_a_failed_call_and_next_call_resumes(tmp_path: Path) -> None:
    one_try = FetchOptions(asset_id="point-mae", max_attempts=1)
    with FileServer({"f.bin": ServedFile(DATA)}, drop_after=2_000_000) as srv:
        with pytest.raises(NetworkError) as err:
            fetch_url(srv.url("f.bin"), tmp_path, "f.bin", one_try)
        assert err.value.exit_code == 3 and "resume" in (err.value.hint or "")
        names = _partials(tmp_path)
        assert len(names) == 2 and names[1].endswith(".incomplete.json")
        record = json.loads((tmp_path / names[1]).read_text())
        assert record["url"] == srv.url("f.bin") and record["total"] == len(DATA)
        got = fetch_url(srv.url("f.bin"), tmp_path, "f.bin", one_try)
    assert got.sha256 == SHA and got.resumed
    assert srv.requests[-1][1] == "bytes=2000000-"


def test_changed_file_on_server_restarts_instead_of_splicing(tmp_path: Path) -> None:
    served = ServedFile(DATA, etag='"v1"')
    one_try = FetchOptions(asset_id="point-mae", max_attempts=1)
    with FileServer({"f.bin": served}, drop_after=1_000_000) as srv:
        with pytest.raises(NetworkError):
            fetch_url(srv.url("f.bin"), tmp_path, "f.bin", one_try)
        new = os.urandom(len(DATA))
        served.data, served.etag = new, '"v2"'
        got = fetch_url(srv.url("f.bin"), tmp_path, "f.bin", one_try)
    assert got.sha256 == hashlib.sha256(new).hexdigest() and not got.resumed


def test_offline_never_opens_a_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise AssertionError("a socket was opened while offline")

    monkeypatch.setattr(socket.socket, "connect", boom)
    opts = FetchOptions(asset_id="point-mae", offline=True)
    with pytest.raises(AssetNotCachedError) as err:
        fetch_url("http://127.0.0.1:9/f.bin", tmp_path / "x", "f.bin", opts)
    assert err.value.exit_code == 3
    assert "POINTPEFT_OFFLINE" in (err.value.hint or "")
    assert not (tmp_path / "x").exists()


def test_http_404_is_unavailable(tmp_path: Path) -> None:
    with FileServer({}) as srv, pytest.raises(AssetUnavailableError) as err:
        fetch_url(srv.url("missing.bin"), tmp_path, "f.bin", OPTS)
    assert "404" in err.value.message and err.value.exit_code == 3


def test_size_different_from_registry_is_integrity_error(tmp_path: Path) -> None:
    with FileServer({"f.bin": ServedFile(DATA)}) as srv, pytest.raises(ChecksumMismatchError):
        fetch_url(srv.url("f.bin"), tmp_path, "f.bin", OPTS, expected_size=len(DATA) + 1)
    assert _partials(tmp_path) == []


def test_connection_refused_is_network_error(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    opts = FetchOptions(asset_id="point-mae", max_attempts=2, retry_delay=0.0, timeout=5)
    with pytest.raises(NetworkError) as err:
        fetch_url(f"http://127.0.0.1:{port}/f.bin", tmp_path, "f.bin", opts)
    assert err.value.exit_code == 3
