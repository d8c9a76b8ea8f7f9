"""The `pointpeft pretrain` configuration: three strict sections loaded from YAML presets.

Defaults are upstream Point-MAE's `cfgs/pretrain.yaml` (AdamW lr 1e-3, weight decay 0.05,
cosine over 300 epochs with 10 warm-up epochs, batch 128, 1024 points, mask ratio 0.6, a
4-block decoder, drop path 0.1, gradient clip 10); presets shrink them for small runs.
Precedence: defaults < preset < `--set a.b=c` < explicit flags. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from pointpeft_cli.errors import ConfigError

DEFAULT_PRESET = "pretrain_point_mae_mini"


@dataclass(frozen=True)
class PretrainModel:
    """Backbone and masked-autoencoder settings (`overrides` = `BackboneConfig` fields)."""

    backbone: str = "point-mae-mini"
    mask_ratio: float = 0.6
    decoder_depth: int = 4
    decoder_heads: int | None = None
    decoder_drop_path: float = 0.1
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PretrainData:
    """Where the clouds come from (`shapes`, `folder`, `modelnet40`, `shapenet55`)."""

    source: str = "shapes"
    data_dir: str | None = None
    points: int = 1024
    samples_per_epoch: int = 4800
    augment: str = "scale_translate"


@dataclass(frozen=True)
class PretrainTrain:
    """Optimisation, schedule, seed and device."""

    epochs: int = 300
    batch_size: int = 128
    lr: float = 0.001
    weight_decay: float = 0.05
    warmup_epochs: int = 10
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    grad_clip: float = 10.0
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    threads: int = 0  # CPU threads; 0 = torch's default (one per core)


@dataclass(frozen=True)
class PretrainConfig:
    """A complete, validated pre-training configuration."""

    model: PretrainModel = field(default_factory=PretrainModel)
    data: PretrainData = field(default_factory=PretrainData)
    train: PretrainTrain = field(default_factory=PretrainTrain)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what config.yaml holds)."""
        return dataclasses.asdict(self)

    def dump(self) -> str:
        """YAML text of the resolved config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_SECTIONS = {"model": PretrainModel, "data": PretrainData, "train": PretrainTrain}
# Settings whose default is None, with the type of a given value.
_OPTIONAL: dict[str, Any] = {"decoder_heads": 0, "data_dir": ""}
_POSITIVE = {
    "decoder_heads",
    "epochs",
    "batch_size",
    "points",
    "samples_per_epoch",
    "decoder_depth",
}


def _coerce(section: str, name: str, value: Any, default: Any) -> Any:
    where = f"{section}.{name}"
    if name in _OPTIONAL:
        default = _OPTIONAL[name]
        if value is None:
            return None
    if isinstance(default, (bool, dict)):
        if not isinstance(value, type(default)):
            raise ConfigError(f"{where} must be a {type(default).__name__}, got {value!r}")
        if isinstance(value, dict):  # YAML-safe: tuples (e.g. encoder_widths) become lists
            return {str(k): list(v) if isinstance(v, tuple) else v for k, v in value.items()}
        return value
    try:
        if isinstance(default, int):
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            value = int(value)
        elif isinstance(default, float):
            value = float(value)
        else:
            value = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a {type(default).__name__}, got {value!r}") from None
    if name in _POSITIVE and value < 1:
        raise ConfigError(f"{where} must be >= 1, got {value}")
    return value


def pretrain_config_from_dict(raw: Mapping[str, Any]) -> PretrainConfig:
    """Validate a nested mapping into a `PretrainConfig`.

    Raises:
        ConfigError: unknown section or key, or a value of the wrong type or range.
    """
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown pretrain config section {unknown[0]!r}", hint="sections: model, data, train"
        )
    sections = {}
    for name, cls in _SECTIONS.items():
        given = raw.get(name) or {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"pretrain config section {name!r} must be a mapping")
        defaults = cls()
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(given) - known)
        if bad:
            raise ConfigError(
                f"unknown pretrain setting {name}.{bad[0]}",
                hint=f"known {name} settings: {', '.join(sorted(known))}",
            )
        values = {k: _coerce(name, k, v, getattr(defaults, k)) for k, v in given.items()}
        sections[name] = cls(**values)
    cfg = PretrainConfig(**sections)
    if not 0.0 < cfg.model.mask_ratio < 1.0:
        raise ConfigError(f"model.mask_ratio must be in (0, 1), got {cfg.model.mask_ratio}")
    return cfg


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def choose_pretrain_preset(preset: str | None, backbone: str | None) -> str:
    """The explicit preset, else `pretrain_<backbone>` when it exists, else the mini's."""
    from pointpeft_cli.config.presets import list_presets

    if preset:
        return preset
    if backbone:
        wanted = "pretrain_" + backbone.strip().lower().replace("-", "_")
        if wanted in list_presets():
            return wanted
    return DEFAULT_PRESET


def resolve_pretrain_config(
    preset: str | None, overrides: Iterable[str] = (), flags: Mapping[str, Any] | None = None
) -> PretrainConfig:
    """defaults < preset (see `choose_pretrain_preset`) < `--set` < explicit flags."""
    from pointpeft_cli.config.presets import deep_merge, load_preset, parse_override

    flags = dict(flags or {})
    raw: dict[str, Any] = load_preset(choose_pretrain_preset(preset, flags.get("model.backbone")))
    for item in overrides:
        raw = deep_merge(raw, parse_override(item))
    for dotted, value in flags.items():
        if value is not None:
            raw = deep_merge(raw, _nested(dotted, value))
    return pretrain_config_from_dict(raw)


def read_pretrain_config(text: str, source: str) -> PretrainConfig:
    """Parse a saved config.yaml (resume)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {source}: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping")
    return pretrain_config_from_dict(raw)
