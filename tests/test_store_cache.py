"""Cache maintenance (scan, verify, remove, prune) and the per-asset inter-process lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pointpeft_cli.errors import AssetNotCachedError, UsageError
from pointpeft_cli.store.cache import asset_path, commit_dir
from pointpeft_cli.store.install import InstallOptions, install_asset
from pointpeft_cli.store.locking import asset_lock
from pointpeft_cli.store.maintenance import prune, remove, scan, verify

FIXTURE = "fixtures/modelnet40_normal_resampled"


@pytest.fixture
def cached(shared_dir: Path, cache_home: Path) -> Path:
    """The real ModelNet40 fixture files imported as the `modelnet40` asset."""
    install_asset(cache_home, "modelnet40", InstallOptions(source=str(shared_dir / FIXTURE)))
    return asset_path(cache_home, "modelnet40")


def test_scan_lists_complete_and_unknown_entries(cached: Path, cache_home: Path) -> None:
    (cache_home / "datasets" / "stale-thing").mkdir()
    entries = {e.id: e for e in scan(cache_home)}
    assert entries["modelnet40"].complete and entries["modelnet40"].known
    assert entries["modelnet40"].files == 9 and entries["modelnet40"].bytes > 0
    assert not entries["stale-thing"].known and not entries["stale-thing"].complete


def test_verify_detects_a_changed_and_a_missing_file(cached: Path, cache_home: Path) -> None:
    assert [r.ok for r in verify(cache_home)] == [True]
    target = cached / "airplane" / "airplane_0001.txt"
    target.write_bytes(target.read_bytes().replace(b"1", b"2", 1))  # same size, other bytes
    (cached / "bathtub" / "bathtub_0002.txt").unlink()
    (cached / "notes.txt").write_text("extra")
    report = verify(cache_home, "modelnet40")[0]
    assert not report.ok
    assert report.mismatched == ["airplane/airplane_0001.txt"]
    assert report.missing == ["bathtub/bathtub_0002.txt"]
    assert report.unexpected == ["notes.txt"]


def test_verify_errors(cache_home: Path) -> None:
    with pytest.raises(AssetNotCachedError):
        verify(cache_home, "point-mae")
    with pytest.raises(UsageError):
        verify(cache_home, "no-such-asset")


def test_remove(cached: Path, cache_home: Path) -> None:
    removed = remove(cache_home, "modelnet40")
    assert removed[0].path == cached and removed[0].bytes > 0
    assert not cached.exists()
    with pytest.raises(AssetNotCachedError):
        remove(cache_home, "modelnet40")


def test_prune_removes_leftovers_and_unknown_entries(cached: Path, cache_home: Path) -> None:
    datasets = cache_home / "datasets"
    (cached / "x.zip.abcd1234.incomplete").write_bytes(b"partial")
    (cached / "x.zip.abcd1234.incomplete.json").write_text("{}")
    (datasets / ".modelnet40.deadbeef.incomplete").mkdir()
    (datasets / "unknown-asset").mkdir()
    (datasets / "unknown-asset" / "f").write_text("x")
    partial_only = cache_home / "checkpoints" / "point-mae"
    partial_only.mkdir(parents=True)
    (partial_only / "pretrain.pth.12345678.incomplete").write_bytes(b"p")
    removed, busy = prune(cache_home)
    assert busy == []
    reasons = {r.path.name: r.reason for r in removed}
    assert reasons["unknown-asset"] == "unknown entry"
    assert reasons["x.zip.abcd1234.incomplete"] == "incomplete"
    assert reasons[".modelnet40.deadbeef.incomplete"] == "incomplete"
    assert not partial_only.exists()
    assert [r.ok for r in verify(cache_home)] == [True]  # the complete asset is untouched


def test_prune_skips_an_asset_being_downloaded(cached: Path, cache_home: Path) -> None:
    (cached / "y.incomplete").write_bytes(b"partial")
    with asset_lock(cache_home, "modelnet40"):
        _removed, busy = prune(cache_home)
    assert busy == ["modelnet40"] and (cached / "y.incomplete").exists()


def test_lock_blocks_another_process(cache_home: Path) -> None:
    code = (
        "import time; from pathlib import Path; "
        "from pointpeft_cli.store.locking import asset_lock\n"
        f"with asset_lock(Path({str(cache_home)!r}), 'point-mae'):\n"
        "    print('locked', flush=True); time.sleep(1.0)\n"
        "    print(time.monotonic(), flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with asset_lock(cache_home, "point-mae", wait=False) as held:
            assert held is False
        waits: list[float] = []
        with asset_lock(cache_home, "point-mae", on_wait=lambda: waits.append(1.0)) as held:
            acquired = time.monotonic()
            assert held and waits == [1.0]
        released = float(child.stdout.readline())  # CLOCK_MONOTONIC is system-wide
        assert acquired >= released  # we only got the lock once the child was done with it
    finally:
        child.wait(timeout=30)


def test_commit_replaces_previous_directory(tmp_path: Path) -> None:
    final, staged = tmp_path / "a", tmp_path / ".a.1.incomplete"
    final.mkdir()
    (final / "old").write_text("old")
    staged.mkdir()
    (staged / "new").write_text("new")
    commit_dir(staged, final)
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    assert [p.name for p in final.iterdir()] == ["new"]
