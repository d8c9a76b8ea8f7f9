"""`pointpeft inspect`: JSON counts, the checkpoint key report, and its failures."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.ckpt_factory import official_state_dict, write_official_checkpoint
from tests.cli_helpers import run_cli


def test_inspect_json_counts() -> None:
    res = run_cli("inspect", "--backbone", "point-mae", "--task", "scanobjectnn-hardest", "--json")
    assert res.exit_code == 0, res.stderr
    data = res.json()
    assert data["ok"] is True and data["command"] == "inspect"
    assert (data["num_group"], data["group_size"], data["num_classes"]) == (128, 32, 15)
    assert data["trainable_params"] == 710_749
    head = data["trainable_groups"]["head"]
    assert data["trainable_params_without_head"] == data["trainable_params"] - head
    assert sum(data["groups"].values()) == data["total_params"]
    assert data["trainable_params"] < 0.04 * data["total_params"]
    assert "matched" not in data
    full = run_cli("inspect", "--backbone", "point-mae", "--task", "modelnet40",
                   "--method", "full", "--json").json()  # fmt: skip
    assert full["trainable_params"] == full["total_params"]


def test_inspect_human_output() -> None:
    res = run_cli("inspect", "--backbone", "point-bert", "--task", "modelnet40")
    assert res.exit_code == 0
    assert res.stdout == ""
    assert "trainable params:" in res.stderr and "without head" in res.stderr
    quiet = run_cli("-q", "inspect", "--backbone", "point-bert", "--task", "modelnet40")
    assert quiet.stdout.startswith("trainable params: ")


def test_inspect_checkpoint_report(tmp_path: Path) -> None:
    ckpt = write_official_checkpoint(tmp_path / "pretrain.pth", module_prefix=True)
    res = run_cli("inspect", "--backbone", "point-mae", "--task", "modelnet40",
                  "--checkpoint", str(ckpt), "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    data = res.json()
    assert len(data["matched"]) == 156 and "blocks.blocks.11.attn.qkv.weight" in data["matched"]
    assert len(data["unexpected"]) == 53 and "module.mask_token" in data["unexpected"]
    assert {"cls_token", "prompt_cor", "blocks.attn1.qkv.weight"} <= set(data["missing"])
    st = tmp_path / "pretrain.safetensors"
    save_file(official_state_dict("mae_pretrain", seed=1), str(st))
    res = run_cli("inspect", "--backbone", "point-mae", "--task", "modelnet40",
                  "--checkpoint", str(st), "--json")  # fmt: skip
    assert res.exit_code == 0 and len(res.json()["matched"]) == 156


class Payload:
    """Anything torch.load(weights_only=True) must refuse to build."""


def test_inspect_refuses_unsafe_and_mismatched_files(tmp_path: Path) -> None:
    unsafe = tmp_path / "evil.pth"
    torch.save({"base_model": {}, "obj": Payload()}, unsafe)
    res = run_cli("inspect", "--backbone", "point-mae", "--task", "modelnet40",
                  "--checkpoint", str(unsafe), "--json")  # fmt: skip
    assert res.exit_code == 4
    assert res.json()["error"]["type"] == "UnsafeFileError"
    bert = write_official_checkpoint(tmp_path / "bert.pth", layout="bert_pretrain")
    res = run_cli("inspect", "--backbone", "point-mae", "--task", "modelnet40",
                  "--checkpoint", str(bert), "--json")  # fmt: skip
    assert res.exit_code == 4 and res.json()["error"]["type"] == "LayoutMismatchError"
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    res = run_cli("inspect", "--backbone", "point-mae", "--task", "modelnet40",
                  "--checkpoint", str(broken))  # fmt: skip
    assert res.exit_code == 4 and "Error:" in res.stderr


def test_inspect_usage_errors() -> None:
    res = run_cli("inspect", "--task", "modelnet40", "--json")
    assert res.exit_code == 2 and "--backbone" in res.json()["error"]["message"]
    res = run_cli("inspect", "--backbone", "point-mae", "--task", "folder")
    assert res.exit_code == 2 and "--num-classes" in res.stderr
    ok = run_cli("inspect", "--backbone", "point-mae-mini", "--task", "folder",
                 "--num-classes", "7", "--json")  # fmt: skip
    assert ok.exit_code == 0 and ok.json()["num_classes"] == 7
    res = run_cli("inspect", "--backbone", "point-mae", "--task", "modelnet40", "--method", "x")
    assert res.exit_code == 2
