"""`pointpeft download`: JSON shapes, human output, and every exit code."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pointpeft_cli.store import registry
from tests.cli_helpers import run_cli
from tests.http_server import serve_paths


class Opaque:
    """Rebuilt only by full unpickling."""


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".locks" not in p.parts
    }


def test_list_json_has_every_asset(cache_home: Path) -> None:
    res = run_cli("download", "--list", "--json")
    assert res.exit_code == 0
    obj = res.json()
    assert obj["ok"] is True and obj["command"] == "download"
    assert [a["id"] for a in obj["assets"]] == list(registry.ASSETS)
    for item in obj["assets"]:
        assert {"id", "kind", "bytes", "cached", "license", "url"} <= item.keys()
        # an empty cache holds nothing; embedded weights ship with the package
        assert item["cached"] is (item["kind"] == "embedded")
    scan = next(a for a in obj["assets"] if a["id"] == "scanobjectnn")
    assert scan["url"] is None and scan["bytes"] == 13_099_259_542


def test_list_human_goes_to_stderr() -> None:
    res = run_cli("download", "--list")
    assert res.exit_code == 0 and res.stdout == ""
    assert "point-mae" in res.stderr and "manual" in res.stderr


def test_import_official_checkpoint_then_verify(official_pth: Path, cache_home: Path) -> None:
    res = run_cli("download", "point-mae", "--from", str(official_pth), "--json")
    assert res.exit_code == 0, res.stderr
    (asset,) = res.json()["assets"]
    assert asset["id"] == "point-mae" and asset["verified"] is True
    assert asset["converted"] == "model.safetensors" and asset["trust_on_first_use"] is True
    assert asset["sha256"] == hashlib.sha256(official_pth.read_bytes()).hexdigest()
    assert {f["name"] for f in asset["files"]} == {"pretrain.pth", "model.safetensors"}
    assert all(isinstance(f["bytes"], int) and len(f["sha256"]) == 64 for f in asset["files"])
    assert Path(asset["path"], "model.safetensors").is_file()
    verify = run_cli("cache", "verify", "--json")
    assert verify.exit_code == 0 and verify.json()["assets"][0]["ok"] is True


def test_human_output_says_trust_on_first_use(official_pth: Path) -> None:
    res = run_cli("download", "point-mae", "--from", str(official_pth))
    assert res.exit_code == 0 and res.stdout == ""
    assert "trust on first use" in res.stderr and "model.safetensors" in res.stderr
    again = run_cli("download", "point-mae")
    assert again.exit_code == 0 and "already cached" in again.stderr


def test_quiet_prints_only_the_path(official_pth: Path, cache_home: Path) -> None:
    res = run_cli("-q", "download", "point-mae", "--from", str(official_pth))
    assert res.exit_code == 0
    assert res.stdout.strip() == str(cache_home / "checkpoints" / "point-mae")


def test_loopback_url_with_drop_resumes(
    official_pth: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POINTPEFT_OFFLINE", "0")
    with serve_paths({"pretrain.pth": official_pth}, drop_after=30_000_000) as srv:
        res = run_cli("download", "point-mae", "--from", srv.url("pretrain.pth"), "--json")
    assert res.exit_code == 0, res.stderr
    asset = res.json()["assets"][0]
    assert asset["status"] == "downloaded" and asset["resumed"] is True
    assert [r[2] for r in srv.requests] == [200, 206]
    assert run_cli("cache", "verify", "point-mae").exit_code == 0


def test_registry_url_download(
    official_pth: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POINTPEFT_OFFLINE", "0")
    with serve_paths({"pretrain.pth": official_pth}) as srv:
        spec = replace(registry.ASSETS["point-mae"].file, urls=(srv.url("pretrain.pth"),))
        monkeypatch.setitem(
            registry.ASSETS, "point-mae", replace(registry.ASSETS["point-mae"], file=spec)
        )
        res = run_cli("download", "point-mae", "--json")
    assert res.exit_code == 0, res.stderr
    assert res.json()["assets"][0]["source"] == srv.url("pretrain.pth")


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_bad_copy_exits_4_and_keeps_cache(
    official_pth: Path, cache_home: Path, tmp_path: Path, damage: str
) -> None:
    assert run_cli("download", "point-mae", "--from", str(official_pth)).exit_code == 0
    before = _tree(cache_home)
    bad = tmp_path / "pretrain.pth"
    if damage == "truncated":
        bad.write_bytes(official_pth.read_bytes()[:-1000])
        args = ["--force"]
    else:
        ckpt = torch.load(official_pth, weights_only=True)
        ckpt["epoch"] = 301  # same tensors, different file: the recorded sha256 must refuse it
        torch.save(ckpt, bad)
        args = []
    res = run_cli("download", "point-mae", "--from", str(bad), "--json", *args)
    assert res.exit_code == 4
    err = res.json()
    assert err["ok"] is False and err["command"] == "download"
    assert err["error"]["exit_code"] == 4
    assert err["error"]["type"] in ("CorruptFileError", "ChecksumMismatchError")
    assert _tree(cache_home) == before


def test_offline_missing_asset_exits_3(cache_home: Path) -> None:
    res = run_cli("download", "point-mae")
    assert res.exit_code == 3
    assert "Error:" in res.stderr and "unset POINTPEFT_OFFLINE" in res.stderr
    res = run_cli("download", "point-mae", "--from", "http://127.0.0.1:9/x.pth", "--json")
    assert res.exit_code == 3 and res.json()["error"]["type"] == "AssetNotCachedError"
    assert not (cache_home / "checkpoints").exists()


def test_licence_gated_asset_explains_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTPEFT_OFFLINE", "0")
    res = run_cli("download", "scanobjectnn")
    assert res.exit_code == 3 and "forms.gle" in res.stderr and "--from" in res.stderr


def test_pickle_needs_trust_flag(tmp_path: Path) -> None:
    path = tmp_path / "p.pth"
    torch.save({"base_model": {"w": torch.zeros(1)}, "extra": Opaque()}, path)
    res = run_cli("download", "point-mae", "--from", str(path), "--json")
    assert res.exit_code == 4 and res.json()["error"]["type"] == "UnsafeFileError"
    assert "--trust-pickle" in res.stderr
    trusted = run_cli("download", "point-mae", "--from", str(path), "--trust-pickle", "--json")
    assert trusted.exit_code == 4  # unpickled, then the layout check refuses it
    assert trusted.json()["error"]["type"] == "LayoutMismatchError"


@pytest.mark.parametrize(
    "args",
    [
        ["download"],
        ["download", "no-such-asset"],
        ["download", "point-mae", "modelnet40", "--from", "x.pth"],
        ["download", "point-mae", "--insecure-tls"],
        ["download", "point-mae", "--from", "/definitely/not/here.pth"],
        ["download", "point-mae", "--timeout", "0"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    res = run_cli(*args, "--json")
    assert res.exit_code == 2
    assert res.json()["ok"] is False and res.json()["error"]["exit_code"] == 2


def test_help_ends_with_examples() -> None:
    res = run_cli("download", "--help")
    assert res.exit_code == 0
    assert res.stdout.rstrip().splitlines()[-1].strip().startswith("pointpeft download")
