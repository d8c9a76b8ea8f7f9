"""The install engine on a full-size official-layout Point-MAE checkpoint and on real data files."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pointpeft_cli.errors import (
    AssetNotCachedError,
    AssetUnavailableError,
    ChecksumMismatchError,
    CorruptFileError,
    LayoutMismatchError,
    UsageError,
)
from pointpeft_cli.store import cache as cache_mod
from pointpeft_cli.store import registry
from pointpeft_cli.store.cache import asset_path, read_manifest
from pointpeft_cli.store.checkpoint import load_checkpoint_state
from pointpeft_cli.store.install import InstallOptions, install_asset
from pointpeft_cli.store.layouts import load_layout
from pointpeft_cli.store.maintenance import verify
from tests.ckpt_factory import official_state_dict
from tests.http_server import serve_paths


def snapshot(root: Path) -> dict[str, str]:
    """Every path under the cache root with its sha256 (lock files are not cache content)."""
    out = {}
    for p in sorted(root.rglob("*")) if root.exists() else []:
        rel = p.relative_to(root).as_posix()
        if not rel.startswith(".locks"):
            out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _altered(official: Path, dest: Path) -> Path:
    """A valid official-layout checkpoint that differs from `official` in one value."""
    state = torch.load(official, weights_only=True)
    state["base_model"]["mask_token"] = state["base_model"]["mask_token"] + 1.0
    torch.save(state, dest)
    return dest


def test_official_checkpoint_is_verified_and_converted(
    official_pth: Path, cache_home: Path
) -> None:
    res = install_asset(cache_home, "point-mae", InstallOptions(source=str(official_pth)))
    assert res.status == "imported" and res.trust_on_first_use and res.pinned_now
    assert res.sha256 == hashlib.sha256(official_pth.read_bytes()).hexdigest()
    directory = asset_path(cache_home, "point-mae")
    manifest = read_manifest(directory)
    assert manifest is not None and manifest["sha256"] == res.sha256
    assert manifest["conversion"]["to"] == "model.safetensors"
    assert manifest["conversion"]["tensors"] == 209
    assert {f["name"] for f in manifest["files"]} == {"pretrain.pth", "model.safetensors"}
    converted = load_file(directory / "model.safetensors")
    expected = official_state_dict("mae_pretrain", seed=0)
    assert converted.keys() == load_layout("mae_pretrain").keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)
    assert all(r.ok for r in verify(cache_home))
    state = load_checkpoint_state(cache_home, "point-mae")
    assert torch.equal(state["mask_token"], expected["mask_token"])


def test_second_import_of_same_file_is_cached(official_pth: Path, cache_home: Path) -> None:
    opts = InstallOptions(source=str(official_pth))
    install_asset(cache_home, "point-mae", opts)
    assert install_asset(cache_home, "point-mae", opts).status == "cached"
    assert install_asset(cache_home, "point-mae").status == "cached"  # no --from, no network


def test_changed_checkpoint_is_refused_then_forced(
    official_pth: Path, cache_home: Path, tmp_path: Path
) -> None:
    first = install_asset(cache_home, "point-mae", InstallOptions(source=str(official_pth)))
    before = snapshot(cache_home)
    other = _altered(official_pth, tmp_path / "other.pth")
    with pytest.raises(ChecksumMismatchError, match="first download"):
        install_asset(cache_home, "point-mae", InstallOptions(source=str(other)))
    assert snapshot(cache_home) == before
    res = install_asset(cache_home, "point-mae", InstallOptions(source=str(other), force=True))
    assert res.replaced_sha256 == first.sha256 and res.sha256 != first.sha256
    assert load_checkpoint_state(cache_home, "point-mae")["mask_token"].mean() > 0.5


@pytest.mark.parametrize("damage", ["truncated", "missing_key"])
def test_bad_checkpoint_leaves_cache_as_it_was(
    official_pth: Path, cache_home: Path, tmp_path: Path, damage: str
) -> None:
    bad = tmp_path / "bad.pth"
    if damage == "truncated":
        bad.write_bytes(official_pth.read_bytes()[:50_000_000])
    else:
        state = official_state_dict("mae_pretrain", seed=1)
        del state["MAE_encoder.norm.bias"]
        torch.save({"base_model": state, "epoch": 1}, bad)
    for prior in (False, True):
        if prior:
            install_asset(cache_home, "point-mae", InstallOptions(source=str(official_pth)))
        before = snapshot(cache_home)
        error = CorruptFileError if damage == "truncated" else LayoutMismatchError
        with pytest.raises(error) as err:
            install_asset(cache_home, "point-mae", InstallOptions(source=str(bad), force=True))
        assert err.value.exit_code == 4
        assert snapshot(cache_home) == before
    if damage == "missing_key":
        assert "MAE_encoder.norm.bias" in err.value.message


def test_loopback_download_resumes_after_drop(
    official_pth: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_paths({"pretrain.pth": official_pth}, drop_after=40_000_000) as srv:
        entry = replace(
            registry.ASSETS["point-mae"],
            file=replace(registry.ASSETS["point-mae"].file, urls=(srv.url("pretrain.pth"),)),
        )
        monkeypatch.setitem(registry.ASSETS, "point-mae", entry)
        res = install_asset(cache_home, "point-mae", InstallOptions(max_attempts=3))
    assert res.status == "downloaded" and res.resumed
    assert [r[2] for r in srv.requests] == [200, 206]
    assert res.sha256 == hashlib.sha256(official_pth.read_bytes()).hexdigest()
    assert all(r.ok for r in verify(cache_home, "point-mae"))
    assert not list(cache_home.rglob("*.incomplete*"))


def test_concurrent_installs_wait_and_both_succeed(official_pth: Path, cache_home: Path) -> None:
    results, errors = [], []

    def run() -> None:
        try:
            results.append(
                install_asset(cache_home, "point-mae", InstallOptions(source=str(official_pth)))
            )
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.status for r in results) == ["cached", "imported"]
    assert len({r.sha256 for r in results}) == 1
    assert all(r.ok for r in verify(cache_home))


def test_kill_before_commit_never_marks_complete(
    official_pth: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pointpeft_cli.store.install as install_mod

    def killed(staged: Path, final: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(install_mod, "commit_dir", killed)
    with pytest.raises(KeyboardInterrupt):
        install_asset(cache_home, "point-mae", InstallOptions(source=str(official_pth)))
    with pytest.raises(AssetNotCachedError):
        asset_path(cache_home, "point-mae")
    monkeypatch.setattr(install_mod, "commit_dir", cache_mod.commit_dir)
    assert install_asset(cache_home, "point-mae", InstallOptions(source=str(official_pth))).path


def _fixture_zip(shared_dir: Path, dest: Path, drop: str | None = None) -> Path:
    src = shared_dir / "fixtures" / "modelnet40_normal_resampled"
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file() and p.name != drop:
                zf.write(p, f"modelnet40_normal_resampled/{p.relative_to(src).as_posix()}")
    return dest


def test_dataset_archive_import_strips_top_folder(
    shared_dir: Path, cache_home: Path, tmp_path: Path
) -> None:
    archive = _fixture_zip(shared_dir, tmp_path / "modelnet40_normal_resampled.zip")
    res = install_asset(cache_home, "modelnet40", InstallOptions(source=str(archive)))
    root = asset_path(cache_home, "modelnet40")
    assert (root / "modelnet40_shape_names.txt").read_text().split()[:2] == ["airplane", "bathtub"]
    assert (root / "airplane" / "airplane_0001.txt").is_file()
    names = {f.name for f in res.files}
    assert "airplane/airplane_0001.txt" in names and len(names) == 9
    manifest = read_manifest(root) or {}
    assert manifest["content_root"] == "modelnet40_normal_resampled"
    assert manifest["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert not list(root.glob("*.zip"))  # the archive itself is not kept


def test_dataset_folder_import_and_missing_content(
    shared_dir: Path, cache_home: Path, tmp_path: Path
) -> None:
    folder = shared_dir / "fixtures" / "modelnet40_normal_resampled"
    res = install_asset(cache_home, "modelnet40", InstallOptions(source=str(folder)))
    assert res.trust_on_first_use and len(res.files) == 9
    before = snapshot(cache_home)
    bad = _fixture_zip(shared_dir, tmp_path / "bad.zip", drop="modelnet40_test.txt")
    with pytest.raises(CorruptFileError, match=r"modelnet40_test\.txt"):
        install_asset(cache_home, "modelnet40", InstallOptions(source=str(bad), force=True))
    assert snapshot(cache_home) == before


def test_pinned_registry_hash_rejects_other_archives(
    shared_dir: Path, cache_home: Path, tmp_path: Path
) -> None:
    archive = _fixture_zip(shared_dir, tmp_path / "modelnet40_ply_hdf5_2048.zip")
    with pytest.raises(ChecksumMismatchError, match="435,212,151"):
        install_asset(cache_home, "modelnet40-h5", InstallOptions(source=str(archive)))
    assert snapshot(cache_home) == {}


def test_manual_and_offline_assets_are_unavailable(cache_home: Path) -> None:
    with pytest.raises(AssetUnavailableError) as err:
        install_asset(cache_home, "scanobjectnn")
    assert "forms.gle" in (err.value.hint or "") and err.value.exit_code == 3
    with pytest.raises(AssetNotCachedError) as err2:
        install_asset(cache_home, "point-mae", InstallOptions(offline=True))
    assert "POINTPEFT_OFFLINE" in (err2.value.hint or "")
    assert snapshot(cache_home) == {}


def test_usage_errors(cache_home: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="insecure"):
        install_asset(cache_home, "point-mae", InstallOptions(insecure_tls=True, offline=True))
    with pytest.raises(UsageError, match="no such file"):
        install_asset(cache_home, "point-mae", InstallOptions(source=str(tmp_path / "nope.pth")))
    with pytest.raises(UsageError, match="folder"):
        install_asset(cache_home, "point-mae", InstallOptions(source=str(tmp_path)))


def test_disk_full_is_refused_before_writing(
    official_pth: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(official_pth.parent)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(AssetUnavailableError, match="free disk space"):
        install_asset(cache_home, "point-mae", InstallOptions(source=str(official_pth)))
    assert not [p for p in snapshot(cache_home) if not p.endswith("checkpoints")]


def test_manifest_is_json_with_version(official_pth: Path, cache_home: Path) -> None:
    install_asset(cache_home, "point-mae", InstallOptions(source=str(official_pth)))
    data = json.loads((cache_home / "checkpoints/point-mae/manifest.json").read_text())
    assert data["complete"] is True and data["pointpeft_version"]
    assert data["source"]["type"] == "file" and data["trust_on_first_use"] is True
