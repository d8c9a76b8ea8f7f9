"""Config schema, presets and the merge order defaults < preset < --set < flags."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pointpeft_cli.config.presets import (
    dump_config,
    list_presets,
    load_preset,
    parse_override,
    resolve_config,
)
from pointpeft_cli.config.schema import RunConfig, config_from_dict
from pointpeft_cli.errors import ConfigError
from pointpeft_cli.tasks import TASKS

REQUIRED_PRESETS = [
    f"{backbone}_{task}"
    for backbone in ("point_mae", "point_bert")
    for task in (
        "modelnet40",
        "scanobjectnn_objbg",
        "scanobjectnn_objonly",
        "scanobjectnn_hardest",
        "modelnet40_fewshot",
    )
]


def test_required_presets_exist_and_resolve() -> None:
    names = set(list_presets())
    for name in REQUIRED_PRESETS:
        assert name in names
        cfg = resolve_config(name)
        assert cfg.data.task in TASKS
        assert cfg.model.backbone == name.split("_")[0] + "-" + name.split("_")[1]


@pytest.mark.parametrize("name", REQUIRED_PRESETS)
def test_presets_carry_the_original_recipe(name: str) -> None:
    cfg = resolve_config(name)
    assert cfg.train.lr == pytest.approx(5e-4)
    assert cfg.train.weight_decay == pytest.approx(0.05)
    assert cfg.train.warmup_epochs == 10
    assert cfg.train.batch_size == 32
    assert cfg.train.grad_clip == pytest.approx(10.0)
    assert cfg.train.epochs == (150 if "fewshot" in name else 300)


def test_scanobjectnn_recipe_for_point_mae() -> None:
    cfg = resolve_config("point-mae-scanobjectnn-hardest")
    assert (cfg.data.points, cfg.model.num_group, cfg.model.group_size) == (2048, 128, 32)
    assert cfg.data.train_augment == "scale_rotate"
    objbg = resolve_config("point_mae_scanobjectnn_objbg")
    assert objbg.data.task == "scanobjectnn-objbg"
    assert objbg.data.points == 2048  # inherited through _base_


def test_merge_order() -> None:
    cfg = resolve_config(
        "point_mae_modelnet40",
        overrides=["train.lr=1e-3", "train.epochs=7"],
        flags={"train.epochs": 3, "train.seed": None},
    )
    assert cfg.train.lr == pytest.approx(1e-3)  # --set beats the preset
    assert cfg.train.epochs == 3  # a flag beats --set
    assert cfg.train.seed == RunConfig().train.seed  # None flags are "not given"
    assert resolve_config().train.epochs == RunConfig().train.epochs


@pytest.mark.parametrize(
    ("override", "fragment", "suggestion"),
    [
        ("trian.lr=1", "unknown config section 'trian'", "train"),
        ("train.lrr=1", "unknown config key 'train.lrr'", "train.lr"),
        ("train.method=fulll", "must be one of", "full"),
        ("train.epochs=abc", "must be int", None),
        ("train.epochs=0", "must be >= 1", None),
        ("train.lr=-1", "must be > 0", None),
        ("model.num_group=0", "must be >= 1", None),
        ("train.grad_clip=.nan", "finite", None),
        ("train.weight_decay=.inf", "finite", None),
    ],
)
def test_bad_overrides(override: str, fragment: str, suggestion: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config(None, [override])
    assert fragment in err.value.message
    assert err.value.exit_code == 2
    if suggestion:
        assert suggestion in (err.value.hint or "")


def test_parse_override_types() -> None:
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    assert parse_override("a.b=true") == {"a": {"b": True}}
    assert parse_override("a.b=null") == {"a": {"b": None}}
    assert parse_override("a=[1, 2]") == {"a": [1, 2]}
    with pytest.raises(ConfigError):
        parse_override("novalue")
    with pytest.raises(ConfigError):
        parse_override("a..b=1")


def test_unknown_preset_suggests() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config("point_mae_modelnet4")
    assert "point_mae_modelnet40" in (err.value.hint or "")


def test_dump_round_trips() -> None:
    cfg = resolve_config("point_bert_modelnet40_fewshot", ["peft.adapter_dim=8"])
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_base_only_one_level(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text("_base_: point_mae_scanobjectnn_objbg\n")
    with pytest.raises(ConfigError, match="one level"):
        load_preset(child)
