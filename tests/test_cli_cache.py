"""`pointpeft cache ls | verify | rm | prune`: JSON shapes, human output and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import run_cli

FIXTURE = "fixtures/modelnet40_normal_resampled"


@pytest.fixture
def cached(shared_dir: Path, cache_home: Path) -> Path:
    """The real ModelNet40 fixture imported through the CLI."""
    res = run_cli("download", "modelnet40", "--from", str(shared_dir / FIXTURE), "--json")
    assert res.exit_code == 0, res.stderr
    return Path(res.json()["assets"][0]["path"])


def test_ls_empty_and_filled(cache_home: Path, shared_dir: Path) -> None:
    empty = run_cli("cache", "ls", "--json").json()
    assert empty == {
        "ok": True,
        "command": "cache ls",
        "root": str(cache_home),
        "assets": [],
        "total_bytes": 0,
    }
    run_cli("download", "modelnet40", "--from", str(shared_dir / FIXTURE))
    obj = run_cli("cache", "ls", "--json").json()
    (entry,) = obj["assets"]
    assert entry["id"] == "modelnet40" and entry["complete"] and entry["files"] == 9
    assert obj["total_bytes"] == entry["bytes"] > 0


def test_ls_human_and_cache_dir_option(tmp_path: Path, cached: Path) -> None:
    res = run_cli("cache", "ls")
    assert res.exit_code == 0 and res.stdout == "" and "modelnet40" in res.stderr
    other = run_cli("cache", "ls", "--cache-dir", str(tmp_path / "elsewhere"), "--json").json()
    assert other["assets"] == [] and other["root"] == str(tmp_path / "elsewhere")


def test_verify_ok_then_mismatch_exits_4(cached: Path) -> None:
    ok = run_cli("cache", "verify", "--json")
    assert ok.exit_code == 0 and ok.json()["assets"][0]["ok"] is True
    (cached / "modelnet40_train.txt").write_text("tampered\n")
    bad = run_cli("cache", "verify", "--json")
    assert bad.exit_code == 4
    obj = bad.json()
    assert obj["ok"] is False and obj["command"] == "cache verify"
    assert obj["error"]["exit_code"] == 4
    assert obj["assets"][0]["mismatched"] == ["modelnet40_train.txt"]
    human = run_cli("cache", "verify", "modelnet40")
    assert human.exit_code == 4 and "MISMATCH" in human.stderr and "Error:" in human.stderr


def test_verify_exit_codes_for_missing_assets() -> None:
    assert run_cli("cache", "verify", "point-mae").exit_code == 3
    assert run_cli("cache", "verify", "nope").exit_code == 2


def test_rm(cached: Path) -> None:
    res = run_cli("cache", "rm", "modelnet40", "--json")
    assert res.exit_code == 0
    obj = res.json()
    assert obj["removed"][0]["path"] == str(cached) and obj["freed_bytes"] > 0
    assert not cached.exists()
    again = run_cli("cache", "rm", "modelnet40", "--json")
    assert again.exit_code == 3 and again.json()["error"]["type"] == "AssetNotCachedError"
    assert run_cli("cache", "rm", "nope").exit_code == 2


def test_prune(cached: Path, cache_home: Path) -> None:
    (cached / "f.zip.0badf00d.incomplete").write_bytes(b"x" * 10)
    (cache_home / "datasets" / "old-asset").mkdir()
    res = run_cli("cache", "prune", "--json")
    assert res.exit_code == 0
    obj = res.json()
    assert {Path(r["path"]).name for r in obj["removed"]} == {
        "f.zip.0badf00d.incomplete",
        "old-asset",
    }
    assert obj["freed_bytes"] == 10 and obj["skipped"] == []
    assert run_cli("cache", "verify").exit_code == 0
    assert "nothing to prune" in run_cli("cache", "prune").stderr


def test_cache_without_subcommand_shows_help() -> None:
    res = run_cli("cache")
    assert "verify" in res.stdout + res.stderr
