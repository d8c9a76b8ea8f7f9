"""`pointpeft finetune` with no flags: the shipped point-mae-mini + Point-PEFT on `shapes`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_cli

from pointpeft_cli.store.registry import get_asset

SMALL = ("--set", "data.shapes_train_size=24", "--set", "data.shapes_test_size=12",
         "--epochs", "1")  # fmt: skip


def test_no_flags_means_the_embedded_default() -> None:
    res = run_cli("finetune", "--print-config", "--json")
    assert res.exit_code == 0, res.stderr
    cfg = res.json()["config"]
    assert cfg["model"]["backbone"] == "point-mae-mini" and cfg["model"]["pretrained"] is True
    assert cfg["model"]["checkpoint"] is None
    assert cfg["data"]["task"] == "shapes" and cfg["train"]["method"] == "point-peft"
    assert cfg["train"]["select"] == "last"


@pytest.mark.slow  # one small real run of the default (about 10 s on an idle machine)
def test_default_run_uses_the_shipped_weights_and_ends_with_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_cli("finetune", *SMALL, "--out", str(out))
    assert res.exit_code == 0, res.stderr
    text = res.stderr
    assert "test accuracy" in text and "trainable" in text.lower()
    assert f"run directory: {out}" in text
    assert f"pointpeft evaluate --run {out}" in text
    assert f"pointpeft export-adapter --run {out}" in text
    run = json.loads((out / "run.json").read_text())
    assert run["backbone"]["source"] == "embedded:point-mae-mini.safetensors"
    assert run["backbone"]["sha256"] == get_asset("point-mae-mini").file.sha256
    assert run["status"] == "complete" and 0.0 <= run["last"]["accuracy"] <= 1.0
    params = run["params"]
    assert 0 < params["trainable_params"] < 0.05 * params["total_params"]
