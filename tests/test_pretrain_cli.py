"""`pointpeft pretrain` on the command line, and a point-mae-size file `download --from` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import run_cli

from pointpeft_cli.engine.pretrain import PTH_NAME, pretrain
from pointpeft_cli.engine.pretrain_config import pretrain_config_from_dict
from pointpeft_cli.engine.weights import resolve_weights
from pointpeft_cli.models.registry import create_model
from pointpeft_cli.store.checkpoint import check_layout, read_torch_checkpoint
from pointpeft_cli.store.layouts import load_layout

TINY_PRESET = {
    "model": {
        "backbone": "point-mae-mini",
        "decoder_depth": 1,
        "overrides": {
            "trans_dim": 32, "depth": 1, "num_heads": 2, "encoder_dims": 32,
            "encoder_widths": [16, 32, 32], "pos_hidden": 16, "pretrain_num_group": 16,
            "pretrain_group_size": 8,
        },
    },
    "data": {"source": "shapes", "points": 128, "samples_per_epoch": 8},
    "train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0, "device": "cpu", "threads": 1},
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("restore_threads")


def test_print_config_defaults_to_the_shipped_preset() -> None:
    res = run_cli("pretrain", "--print-config", "--json")
    assert res.exit_code == 0, res.stderr
    cfg = res.json()["config"]
    assert cfg["model"]["backbone"] == "point-mae-mini" and cfg["data"]["source"] == "shapes"
    res = run_cli("pretrain", "--print-config", "--data-dir", "clouds/", "--epochs", "3")
    cfg = yaml.safe_load(res.stdout)
    assert cfg["data"] == {**cfg["data"], "source": "folder", "data_dir": "clouds"}
    assert cfg["train"]["epochs"] == 3
    # point-mae gets the upstream recipe (4 decoder blocks: the official 209-tensor layout)
    cfg = run_cli("pretrain", "--backbone", "point-mae", "--print-config", "--json").json()
    assert cfg["config"]["model"]["decoder_depth"] == 4
    assert cfg["config"]["data"]["source"] == "shapenet55"


def test_a_tiny_run_reports_its_files_as_json(tmp_path: Path) -> None:
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(TINY_PRESET))
    out = tmp_path / "run"
    res = run_cli("pretrain", "--preset", str(preset), "--out", str(out), "--json")
    assert res.exit_code == 0, res.stderr
    obj = res.json()
    assert obj["ok"] and obj["command"] == "pretrain" and obj["epochs"] == 1
    assert obj["files"]["pth"] == str(out / PTH_NAME) and (out / PTH_NAME).is_file()
    assert obj["loss"] > 0 and obj["parameters"] > 0
    again = run_cli("pretrain", "--preset", str(preset), "--out", str(out))
    assert again.exit_code == 2 and "--resume" in again.stderr  # never overwrites a run
    done = run_cli("pretrain", "--resume", "--out", str(out), "--json")
    assert done.exit_code == 0 and done.json()["epochs"] == 1  # nothing left to train


@pytest.mark.parametrize(
    "args",
    [("--resume",), ("--resume", "--out", "x", "--epochs", "2"), ("--set", "train.nope=1")],
)
def test_bad_invocations_exit_2(args: tuple[str, ...]) -> None:
    res = run_cli("pretrain", *args, "--print-config")
    assert res.exit_code == 2
    assert res.stderr.startswith("Error:")


@pytest.mark.slow
def test_point_mae_size_pretrain_is_an_official_layout_file(tmp_path: Path, cache_home) -> None:
    cfg = pretrain_config_from_dict(
        {
            "model": {"backbone": "point-mae"},
            "data": {"source": "shapes", "points": 256, "samples_per_epoch": 2},
            "train": {"epochs": 1, "batch_size": 2, "warmup_epochs": 0, "device": "cpu"},
        }
    )
    result = pretrain(cfg, tmp_path / "mae", cache_root=cache_home)
    pth = Path(result.files["pth"])
    check_layout(read_torch_checkpoint(pth), load_layout("mae_pretrain"), pth.name, "mae_pretrain")
    res = run_cli("download", "point-mae", "--from", str(pth), "--json")
    assert res.exit_code == 0, res.stderr
    weights = resolve_weights("point-mae", pretrained=True, checkpoint=None, cache_root=cache_home)
    model = create_model("point-mae", num_classes=12, method="linear")
    report = model.load_pretrained(weights.state)
    assert not report.mismatched and "blocks.blocks.11.mlp.fc2.weight" in report.matched
    file_state = read_torch_checkpoint(pth)
    assert torch.equal(model.state_dict()["norm.weight"], file_state["MAE_encoder.norm.weight"])
