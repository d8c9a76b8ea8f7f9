"""`download` killed mid-file and mid-rename, and concurrent `download` / `build-memory-bank`
calls for the same asset: the next call resumes or restarts, a half-written asset is never
marked complete, and concurrent calls give one result and both succeed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pointpeft_cli.errors import AssetNotCachedError
from pointpeft_cli.store.cache import asset_path, read_manifest
from pointpeft_cli.store.maintenance import verify
from tests.cli_helpers import run_cli
from tests.reliability.harness import (
    REPO,
    TINY_BANK,
    Proc,
    cli_command,
    run_proc,
    subprocess_env,
)

ASSET = "modelnet40"
MB = 1 << 20


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """The real fixture shapes as a ModelNet40 import, padded to ~4 MB (several 1 MB chunks)."""
    path = tmp_path_factory.mktemp("archive") / "modelnet40_normal_resampled.zip"
    src = shared_dir / "fixtures" / "modelnet40_normal_resampled"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, f"modelnet40_normal_resampled/{p.relative_to(src).as_posix()}")
        noise = np.random.default_rng(0).bytes(3 * MB)
        zf.writestr("modelnet40_normal_resampled/padding.bin", noise)
    return path


def _complete(cache: Path) -> bool:
    try:
        directory = asset_path(cache, ASSET)
    except AssetNotCachedError:
        return False
    assert read_manifest(directory) is not None
    reports = verify(cache, ASSET)
    assert all(r.ok for r in reports), "an asset marked complete does not verify"
    return True


class _StallingServer:
    """Serves one file; the first response stops after `stall_at` bytes until released."""

    def __init__(self, data: bytes, stall_at: int) -> None:
        self.data, self.stall_at = data, stall_at
        self.release = threading.Event()
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                body = server.data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                if start:
                    total = len(server.data)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                self.end_headers()
                if len(server.ranges) == 1:
                    self.wfile.write(body[: server.stall_at])
                    self.wfile.flush()
                    server.release.wait(60)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTPEFT_OFFLINE", "0")  # loopback only (conftest blocks the rest)


def _wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_kill_mid_file_then_the_next_call_resumes(
    archive: Path, cache_home: Path, online: None
) -> None:
    data = archive.read_bytes()
    server = _StallingServer(data, stall_at=int(2.5 * MB))
    url = server.url(archive.name)
    try:
        proc = subprocess.Popen(
            cli_command("download", ASSET, "--from", url, "--json"),
            cwd=REPO,
            env=subprocess_env(cache_home, POINTPEFT_OFFLINE="0"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        partials = lambda: list((cache_home / "datasets").rglob("*.zip.*.incomplete"))  # noqa: E731
        _wait_for(lambda: any(p.stat().st_size >= 2 * MB for p in partials()))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert not _complete(cache_home), "a half-downloaded asset was marked complete"
        kept = partials()[0].stat().st_size
        assert 2 * MB <= kept < len(data)
        res = run_cli("download", ASSET, "--from", url, "--json")
        assert res.exit_code == 0, res.stderr
        (asset,) = res.json()["assets"]
        assert asset["resumed"] is True and asset["status"] == "downloaded"
        assert server.ranges[-1] == f"bytes={kept}-"
    finally:
        server.close()
    assert _complete(cache_home)
    assert not list(cache_home.rglob("*.incomplete*"))


def _kill(cache: Path, fault: str, *args: str) -> None:
    res = run_proc(cli_command("download", ASSET, *args, fault=fault), cache,
                   POINTPEFT_OFFLINE="0")  # fmt: skip
    assert res.returncode == -signal.SIGKILL, (fault, res.returncode, res.stderr[-2000:])


@pytest.mark.parametrize(
    "fault",
    [
        "replace:manifest.json:1:torn",  # the manifest (the completion mark) is half-written
        "replace:manifest.json:1:after",  # the staged tree is complete, not yet moved in place
        f"replace:{ASSET}:1:before",  # the final rename never happened
        "replace:manifest.json:1:before",  # everything extracted, the manifest not in place
    ],
)
def test_kill_mid_rename_never_marks_complete(fault: str, archive: Path, cache_home: Path) -> None:
    _kill(cache_home, fault, "--from", str(archive))
    assert not _complete(cache_home)
    res = run_cli("download", ASSET, "--from", str(archive), "--json")
    assert res.exit_code == 0, res.stderr
    assert res.json()["assets"][0]["status"] == "imported"
    assert _complete(cache_home)
    # the killed call's staging directory is gone (the next install sweeps it under the lock)
    assert not list((cache_home / "datasets").glob(".*"))


def test_kill_while_replacing_keeps_the_previous_copy(archive: Path, cache_home: Path) -> None:
    first = run_cli("download", ASSET, "--from", str(archive), "--json")
    assert first.exit_code == 0, first.stderr
    sha = first.json()["assets"][0]["sha256"]
    # --force: killed after the old copy moved aside, before the new one moved in
    _kill(cache_home, f"replace:.{ASSET}.*.old.incomplete:1:after", "--from", str(archive),
          "--force")  # fmt: skip
    assert not _complete(cache_home)
    again = run_cli("download", ASSET, "--from", str(archive), "--json")
    assert again.exit_code == 0, again.stderr
    (asset,) = again.json()["assets"]
    assert asset["status"] == "cached" and asset["sha256"] == sha  # restored, not re-imported
    assert _complete(cache_home)
    assert not list((cache_home / "datasets").glob(".*"))


def test_kill_after_the_partial_moved_restarts(archive: Path, cache_home: Path) -> None:
    from tests.http_server import serve_paths

    with serve_paths({archive.name: archive}) as server:
        url = server.url(archive.name)
        _kill(cache_home, f"replace:{archive.name}:1:after", "--from", url)
        assert not _complete(cache_home)
        res = run_proc(cli_command("download", ASSET, "--from", url, "--json"), cache_home,
                       POINTPEFT_OFFLINE="0")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.json()["assets"][0]["resumed"] is False  # restarted from byte 0
    assert _complete(cache_home)
    assert not list(cache_home.rglob("*.incomplete*"))


def _together(commands: list[list[str]], cache: Path) -> list[Proc]:
    env = subprocess_env(cache)
    pipe = subprocess.PIPE
    procs = [
        subprocess.Popen(c, cwd=REPO, env=env, stdout=pipe, stderr=pipe, text=True)
        for c in commands
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=180)
        out.append(Proc(p.returncode, stdout, stderr))
    return out


def test_concurrent_downloads_give_one_result(archive: Path, cache_home: Path) -> None:
    cmd = cli_command("download", ASSET, "--from", str(archive), "--json")
    results = _together([cmd, cmd], cache_home)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assets = [r.json()["assets"][0] for r in results]
    assert sorted(a["status"] for a in assets) == ["cached", "imported"]
    assert len({a["sha256"] for a in assets}) == 1 and len({a["path"] for a in assets}) == 1
    assert _complete(cache_home)
    assert [p.name for p in (cache_home / "datasets").iterdir()] == [ASSET]


def test_concurrent_memory_bank_builds_give_one_result(cache_home: Path) -> None:
    cmd = cli_command("build-memory-bank", *TINY_BANK, "--json")
    results = _together([cmd, cmd], cache_home)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    payloads = [r.json() for r in results]
    assert len({p["path"] for p in payloads}) == 1
    assert sorted(p["cached"] for p in payloads) == [False, True]  # built once, then reused
    banks = list((cache_home / "memory_banks").iterdir())
    assert [b.name for b in banks] == [Path(payloads[0]["path"]).name]
    from pointpeft_cli.engine.memory_bank import load_bank

    assert load_bank(banks[0]).num_samples == 16
    assert json.loads(json.dumps(payloads[0]))["feature_dim"] > 0
