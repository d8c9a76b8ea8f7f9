"""`engine.pretrain`: output files in the upstream layout, exact resume, config validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pointpeft_cli.engine.pretrain import (
    ENCODER_FP16_NAME,
    PTH_NAME,
    SAFETENSORS_NAME,
    pretrain,
)
from pointpeft_cli.engine.pretrain_config import (
    PretrainConfig,
    pretrain_config_from_dict,
    resolve_pretrain_config,
)
from pointpeft_cli.engine.train import TrainHooks
from pointpeft_cli.errors import ConfigError, RunInterrupted, UsageError

TINY = {
    "trans_dim": 32, "depth": 2, "num_heads": 2, "encoder_dims": 32,
    "encoder_widths": [16, 32, 32], "pos_hidden": 16, "pretrain_num_group": 16,
    "pretrain_group_size": 8,
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("restore_threads")


def tiny_config(**train) -> PretrainConfig:
    return pretrain_config_from_dict(
        {
            "model": {"backbone": "point-mae-mini", "decoder_depth": 1, "overrides": TINY},
            "data": {"source": "shapes", "points": 128, "samples_per_epoch": 16},
            "train": {"epochs": 2, "batch_size": 8, "warmup_epochs": 1, "device": "cpu",
                      "threads": 1, "seed": 3, **train},
        }
    )  # fmt: skip


def test_writes_the_upstream_container_safetensors_and_fp16_encoder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = pretrain(tiny_config(), out, cache_root=tmp_path / "cache")
    assert result.epochs == 2 and result.loss is not None and result.loss > 0
    obj = torch.load(out / PTH_NAME, map_location="cpu", weights_only=True)
    assert set(obj) == {"base_model", "epoch", "metrics", "best_metrics"} and obj["epoch"] == 2
    state = obj["base_model"]
    assert "mask_token" in state and "increase_dim.0.weight" in state
    flat = load_file(str(out / SAFETENSORS_NAME))
    assert set(flat) == set(state)
    assert all(torch.equal(flat[k], state[k]) for k in state)
    enc = load_file(str(out / ENCODER_FP16_NAME))
    assert set(enc) == {k for k in state if k.startswith("MAE_encoder.")}
    for k, v in enc.items():
        if state[k].is_floating_point():
            assert v.dtype == torch.float16
            assert torch.allclose(v.float(), state[k], atol=1e-3, rtol=1e-3)
        else:
            assert torch.equal(v, state[k])  # BatchNorm counters stay integers
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["epochs_completed"] == 2
    assert not list(out.rglob("*.tmp*")) and not list(out.rglob("*.partial"))


def test_resume_after_ctrl_c_ends_with_the_same_tensors(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=3)
    straight = tmp_path / "straight"
    pretrain(cfg, straight, cache_root=tmp_path / "cache")

    def stop_after_first(record: dict) -> None:
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    broken = tmp_path / "broken"
    with pytest.raises(RunInterrupted) as info:
        pretrain(cfg, broken, cache_root=tmp_path / "cache",
                 hooks=TrainHooks(on_epoch=stop_after_first))  # fmt: skip
    assert info.value.exit_code == 130 and "--resume" in (info.value.hint or "")
    assert json.loads((broken / "run.json").read_text())["status"] == "interrupted"
    resumed = pretrain(cfg, broken, cache_root=tmp_path / "cache", resume=True)
    assert resumed.epochs == 3
    a, b = load_file(str(straight / SAFETENSORS_NAME)), load_file(str(broken / SAFETENSORS_NAME))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    loss = [json.loads(x)["loss"] for x in (straight / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(x)["loss"] for x in (broken / "metrics.jsonl").read_text().splitlines()]
    assert loss == again


def test_a_different_seed_gives_different_weights(tmp_path: Path) -> None:
    pretrain(tiny_config(epochs=1), tmp_path / "a", cache_root=tmp_path)
    pretrain(tiny_config(epochs=1, seed=4), tmp_path / "b", cache_root=tmp_path)
    a = load_file(str(tmp_path / "a" / SAFETENSORS_NAME))
    b = load_file(str(tmp_path / "b" / SAFETENSORS_NAME))
    assert not torch.equal(a["mask_token"], b["mask_token"])


def test_a_non_empty_directory_needs_resume_and_resume_needs_a_run(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    with pytest.raises(UsageError):
        pretrain(tiny_config(), tmp_path / "x", cache_root=tmp_path)
    with pytest.raises(UsageError):
        pretrain(tiny_config(), tmp_path / "y", cache_root=tmp_path, resume=True)
    assert (tmp_path / "x" / "file").read_text() == "keep me"


def test_the_shipped_preset_resolves_and_flags_override_it() -> None:
    cfg = resolve_pretrain_config(None)
    assert cfg.model.backbone == "point-mae-mini" and cfg.data.source == "shapes"
    assert cfg.model.mask_ratio == 0.6 and cfg.train.seed == 0
    cfg = resolve_pretrain_config(None, ["train.lr=0.002"], {"train.epochs": 3})
    assert cfg.train.lr == 0.002 and cfg.train.epochs == 3


@pytest.mark.parametrize(
    "raw",
    [
        {"optim": {}},
        {"train": {"epoch": 3}},
        {"train": {"epochs": "many"}},
        {"train": {"epochs": 0}},
        {"train": {"batch_size": 2.5}},
        {"model": {"mask_ratio": 1.0}},
        {"model": {"overrides": [1, 2]}},
    ],
)
def test_bad_configs_are_config_errors(raw: dict) -> None:
    with pytest.raises(ConfigError):
        pretrain_config_from_dict(raw)


def test_unknown_backbone_override_and_non_mae_family_are_config_errors(tmp_path: Path) -> None:
    cfg = pretrain_config_from_dict({"model": {"overrides": {"width": 3}}})
    with pytest.raises(ConfigError, match="width"):
        pretrain(cfg, tmp_path / "a", cache_root=tmp_path)
    cfg = pretrain_config_from_dict({"model": {"backbone": "point-bert"}})
    with pytest.raises(ConfigError, match="point-bert"):
        pretrain(cfg, tmp_path / "b", cache_root=tmp_path)
