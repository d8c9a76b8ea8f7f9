"""Bad environments, through the CLI: unwritable cache or run directories, a disk that fills up
in the middle of a write, and file names that are not UTF-8. Same bar as the bad-input corpus:
documented exit code, one-line message, no traceback, nothing changed or left half-written."""

from __future__ import annotations

import builtins
import errno
import fnmatch
import io
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cli_helpers import run_cli
from tests.reliability.harness import (
    TINY,
    TINY_BANK,
    assert_clean_failure,
    assert_unchanged,
    cli_command,
    run_proc,
    tree_snapshot,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def expect(code: int, words: tuple[str, ...], roots: list[Path], *args: str) -> dict:
    before = tree_snapshot(*roots)
    error = assert_clean_failure(run_cli(*args, "--json"), code, *words)
    assert_unchanged(before, tree_snapshot(*roots))
    return error


# ---- unwritable directories ------------------------------------------------------------------


def test_run_dir_under_a_file(tmp_path: Path, cache_home: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the run's parent folder should be")
    out = blocker / "run"
    expect(2, ("not-a-dir", "not a directory"), [cache_home, tmp_path], "finetune", *TINY,
           "--epochs", "1", "--out", str(out))  # fmt: skip


def test_cache_dir_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "cache-file"
    blocker.write_text("x")
    expect(2, ("cache-file", "not a directory"), [tmp_path], "build-memory-bank", *TINY_BANK,
           "--cache-dir", str(blocker / "cache"))  # fmt: skip


def test_export_into_a_file(run_dir: Path, tmp_path: Path, cache_home: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    expect(2, ("blocker",), [cache_home, run_dir, tmp_path], "export-adapter", "--run",
           str(run_dir), "--out", str(blocker / "adapter"))  # fmt: skip


@pytest.mark.skipif(IS_ROOT, reason="root ignores directory permissions")
def test_read_only_cache_and_run_parent(tmp_path: Path) -> None:
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    cache.mkdir()
    runs.mkdir()
    cache.chmod(0o500)
    runs.chmod(0o500)
    try:
        expect(2, ("permission",), [cache], "build-memory-bank", *TINY_BANK, "--cache-dir",
               str(cache))  # fmt: skip
        expect(2, ("permission",), [runs], "finetune", *TINY, "--out", str(runs / "r"),
               "--cache-dir", str(tmp_path / "c2"))  # fmt: skip
    finally:
        cache.chmod(0o700)
        runs.chmod(0o700)


# ---- a disk that fills up --------------------------------------------------------------------


class _Disk:
    """A budget of bytes for Python-level writes under `root`; past it, writes fail ENOSPC."""

    def __init__(self, root: Path, budget: int) -> None:
        self.root, self.left = str(root), budget

    def wrap(self, real: Any) -> Any:
        def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            fh = real(file, mode, *args, **kwargs)
            writing = any(c in mode for c in "wxa+") and isinstance(file, (str, os.PathLike))
            if writing and os.path.abspath(os.fspath(file)).startswith(self.root):
                return _LimitedFile(fh, self)
            return fh

        return opener


class _LimitedFile:
    def __init__(self, fh: Any, disk: _Disk) -> None:
        self._fh, self._disk = fh, disk

    def write(self, data: Any) -> int:
        n = len(data)
        if n > self._disk.left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(self._fh, "name", None))
        self._disk.left -= n
        return self._fh.write(data)

    def __enter__(self) -> _LimitedFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _fill_disk(monkeypatch: pytest.MonkeyPatch, root: Path, budget: int) -> None:
    disk = _Disk(root, budget)
    monkeypatch.setattr(builtins, "open", disk.wrap(builtins.open))
    monkeypatch.setattr(io, "open", disk.wrap(io.open))


def _fsync_fails_for(monkeypatch: pytest.MonkeyPatch, pattern: str) -> None:
    """fsync raises ENOSPC for files whose name matches `pattern` (where C writers -- h5py,
    torch.save, safetensors -- first see a full disk with delayed allocation)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if fnmatch.fnmatch(name, pattern):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_while_importing_a_dataset(
    shared_dir: Path, tmp_path: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = shared_dir / "fixtures" / "modelnet40_normal_resampled"
    archive = tmp_path / "modelnet40_normal_resampled.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, f"modelnet40_normal_resampled/{p.relative_to(src).as_posix()}")
    cache_home.mkdir(parents=True, exist_ok=True)
    _fill_disk(monkeypatch, cache_home, 400_000)
    expect(3, ("space",), [cache_home], "download", "modelnet40", "--from",
           str(archive))  # fmt: skip
    assert not list(cache_home.rglob("*.incomplete"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
@pytest.mark.parametrize("pattern", ["*.incomplete", "*.h5.*.incomplete", ".last.pt.*"])
def test_disk_full_during_a_new_run_leaves_no_run_dir(
    pattern: str, tmp_path: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first write (config.yaml), the memory bank, or the first resume state fails."""
    _fsync_fails_for(monkeypatch, pattern)
    out = tmp_path / "runs" / "new"
    res = run_cli("finetune", *TINY, "--epochs", "1", "--out", str(out), "--json")
    assert_clean_failure(res, 3, "cannot write", "space")
    assert not (tmp_path / "runs").exists(), "a failed new run left its directory behind"
    assert not list(cache_home.rglob("*.incomplete"))
    if pattern == "*.h5.*.incomplete":
        assert not (cache_home / "memory_banks").exists()


# ---- file names that are not UTF-8 -------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="POSIX byte file names")
def test_non_utf8_paths(adapter: Path, tmp_path: Path, cache_home: Path) -> None:
    folder = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(folder)
    cloud = folder + b"/shape-\xff.npy"
    np.save(os.fsdecode(cloud), np.random.default_rng(0).standard_normal((300, 3)).astype("f4"))
    name = os.fsdecode(cloud)
    ok = run_proc(cli_command("predict", "--adapter", str(adapter), name, "--json"), cache_home)
    assert ok.returncode == 0, ok.stderr
    assert ok.json()["predictions"][0]["file"] == name
    human = run_proc(cli_command("predict", "--adapter", str(adapter), name), cache_home)
    assert human.returncode == 0 and "Traceback" not in human.stderr, human.stderr
    before = tree_snapshot(cache_home, adapter)
    missing = os.fsdecode(folder + b"/gone-\xfe.npy")
    bad = run_proc(cli_command("predict", "--adapter", str(adapter), missing, "--json"),
                   cache_home)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    message = bad.json()["error"]["message"]
    assert "\n" not in message and "gone-\\xfe.npy" in message
    assert "gone-\\xfe.npy" in bad.stderr
    assert_unchanged(before, tree_snapshot(cache_home, adapter))
