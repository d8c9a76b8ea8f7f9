"""The asset registry: complete entries, pinned layouts, licence-gated assets, id lookup."""

from __future__ import annotations

import pytest

from pointpeft_cli.errors import UsageError
from pointpeft_cli.store.layouts import load_layout
from pointpeft_cli.store.registry import ASSETS, get_asset
from pointpeft_cli.tasks import TASKS


def test_every_entry_is_complete() -> None:
    for key, asset in ASSETS.items():
        assert asset.id == key and asset.kind in ("checkpoint", "dataset", "embedded")
        assert asset.title and asset.license and asset.howto
        if asset.kind == "checkpoint":
            assert asset.file.layout and asset.url  # verified by layout, fetched by URL
        elif asset.kind == "embedded":  # ships in the package: pinned by size and sha256
            assert asset.file.sha256 and len(asset.file.sha256) == 64 and asset.file.size
        else:
            assert asset.required


def test_checkpoints_pin_the_upstream_layouts() -> None:
    assert get_asset("point-mae").file.layout == "mae_pretrain"
    assert len(load_layout("mae_pretrain")) == 209
    assert get_asset("point-bert").file.layout == "bert_pretrain"
    assert len(load_layout("bert_pretrain")) == 411


def test_modelnet40_h5_pins_published_size_and_sha256() -> None:
    spec = get_asset("modelnet40-h5").file
    assert spec.size == 435_212_151 and spec.sha256 and len(spec.sha256) == 64


def test_licence_gated_and_browser_only_assets_have_no_url() -> None:
    for asset_id in ("scanobjectnn", "modelnet40-fewshot"):
        asset = get_asset(asset_id)
        assert asset.url is None
        assert f"pointpeft download {asset_id} --from" in asset.howto
    assert "https://forms.gle/g29a6qSgjatjb1vZ6" in get_asset("scanobjectnn").howto


def test_insecure_tls_is_allowed_only_for_the_broken_host() -> None:
    allowed = {a.id for a in ASSETS.values() if a.insecure_tls_ok}
    assert allowed == {"modelnet40", "modelnet40-h5"}


def test_every_task_asset_is_registered() -> None:
    for task in TASKS.values():
        assert task.asset is None or task.asset in ASSETS


def test_unknown_id_suggests_a_close_one() -> None:
    with pytest.raises(UsageError) as err:
        get_asset("point-ma")
    assert err.value.exit_code == 2 and "point-mae" in (err.value.hint or "")
