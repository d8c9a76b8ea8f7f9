"""The point-mae-mini weights shipped in the package: size, hash, layout, loading, integrity."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from safetensors.torch import load_file

from pointpeft_cli.engine import weights as weights_mod
from pointpeft_cli.errors import ChecksumMismatchError, CorruptFileError
from pointpeft_cli.models.mae_pretrain import MaskedAutoencoder
from pointpeft_cli.models.registry import create_model, default_config
from pointpeft_cli.store.hashing import sha256_file
from pointpeft_cli.store.registry import get_asset

SHIPPED = Path(weights_mod.__file__).resolve().parents[1] / "assets" / "point-mae-mini.safetensors"


def test_the_shipped_file_is_small_and_matches_the_registry() -> None:
    assert SHIPPED.is_file()
    assert SHIPPED.stat().st_size <= 8 * 1024 * 1024
    asset = get_asset("point-mae-mini")
    assert asset.kind == "embedded" and asset.file.name == SHIPPED.name
    assert asset.file.sha256 == sha256_file(SHIPPED)
    assert asset.file.size == SHIPPED.stat().st_size


def test_it_holds_exactly_the_mini_encoder_in_upstream_names_as_fp16() -> None:
    shipped = load_file(str(SHIPPED))
    expected = MaskedAutoencoder(default_config("point-mae-mini")).encoder_state_dict()
    assert set(shipped) == set(expected)
    for key, value in shipped.items():
        assert value.shape == expected[key].shape, key
        want = torch.float16 if expected[key].is_floating_point() else expected[key].dtype
        assert value.dtype == want, key
        assert bool(torch.isfinite(value.float()).all()), key


def test_resolve_weights_upcasts_and_the_classifier_loads_every_backbone_tensor(
    tmp_path: Path,
) -> None:
    w = weights_mod.resolve_weights(
        "point-mae-mini", pretrained=True, checkpoint=None, cache_root=tmp_path
    )
    assert w.source == "embedded:point-mae-mini.safetensors" and w.sha256 == sha256_file(SHIPPED)
    assert w.state is not None
    assert all(v.dtype == torch.float32 for v in w.state.values() if v.is_floating_point())
    model = create_model("point-mae-mini", num_classes=12, method="point-peft")
    report = model.load_pretrained(w.state)
    assert not report.mismatched and not report.unexpected
    assert torch.equal(
        model.state_dict()["blocks.blocks.5.mlp.fc2.weight"],
        w.state["MAE_encoder.blocks.blocks.5.mlp.fc2.weight"],
    )
    # pre-trained, not the initialisation: LayerNorm weights moved away from 1
    assert float((model.norm.weight.detach() - 1).abs().max()) > 1e-2


def test_a_changed_shipped_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / SHIPPED.name
    shutil.copyfile(SHIPPED, copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0x01
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(weights_mod, "embedded_weights_path", lambda backbone: copy)
    with pytest.raises(ChecksumMismatchError) as info:
        weights_mod.resolve_weights(
            "point-mae-mini", pretrained=True, checkpoint=None, cache_root=tmp_path
        )
    assert info.value.exit_code == 4


def test_a_missing_shipped_file_is_an_integrity_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(weights_mod, "embedded_weights_path", lambda backbone: None)
    with pytest.raises(CorruptFileError, match="point-mae-mini"):
        weights_mod.resolve_weights(
            "point-mae-mini", pretrained=True, checkpoint=None, cache_root=tmp_path
        )


def test_download_lists_it_and_refuses_to_fetch_it() -> None:
    listed = run_cli("download", "--list", "--json")
    assert listed.exit_code == 0
    kinds = {a["id"]: a["kind"] for a in listed.json()["assets"]}
    assert kinds["point-mae-mini"] == "embedded"
    res = run_cli("download", "point-mae-mini")
    assert res.exit_code == 2 and "ships inside the package" in res.stderr
    assert run_cli("cache", "ls", "--json").exit_code == 0
