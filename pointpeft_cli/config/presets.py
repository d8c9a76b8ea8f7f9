"""Presets (YAML shipped in the wheel), `--set a.b=c` overrides, and the merged, resolved config."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pointpeft_cli.config.schema import RunConfig, config_from_dict
from pointpeft_cli.errors import ConfigError

BASE_KEY = "_base_"


def presets_dir() -> Path:
    """Where the preset YAML files are: inside the installed wheel, else the source checkout."""
    packaged = Path(str(resources.files("pointpeft_cli"))) / "presets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "presets"


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_").removesuffix(".yaml")


def list_presets() -> list[str]:
    """Preset names (file stems), sorted."""
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of preset `name` (dashes and underscores are interchangeable)."""
    wanted = _canonical(name)
    for stem in list_presets():
        if _canonical(stem) == wanted:
            return presets_dir() / f"{stem}.yaml"
    close = difflib.get_close_matches(wanted, list_presets(), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"presets: {', '.join(list_presets())}"
    raise ConfigError(f"unknown preset {name!r}", hint=hint)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return data


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` over `base`, recursing into nested mappings."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """A preset's raw mapping with its `_base_` (at most one level deep) merged under it."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = preset_path(str(name_or_path))
    data = _read_yaml(path)
    base_name = data.pop(BASE_KEY, None)
    if base_name is None:
        return data
    base = _read_yaml(preset_path(str(base_name)))
    if BASE_KEY in base:
        raise ConfigError(f"preset {path.stem}: `_base_` may only be one level deep")
    return deep_merge(base, data)


def parse_override(item: str) -> dict[str, Any]:
    """`a.b=c` -> {"a": {"b": c}} with `c` parsed as YAML (numbers, booleans, null, lists)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad --set {item!r}", hint="use --set section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return _nested(key, value)


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    parts = dotted.split(".")
    nested: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def resolve_config(
    preset: str | Path | None = None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> RunConfig:
    """defaults < preset < `--set` overrides < explicit flags (dotted keys, None = not given)."""
    raw: dict[str, Any] = load_preset(preset) if preset else {}
    for item in overrides:
        raw = deep_merge(raw, parse_override(item))
    for dotted, value in (flags or {}).items():
        if value is not None:
            raw = deep_merge(raw, _nested(dotted, value))
    return config_from_dict(raw)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (what `--print-config` shows and runs save)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


DEFAULT_PRESET = "point_mae_mini_shapes"


def choose_preset(preset: str | None, backbone: str | None, task: str | None) -> str | None:
    """The explicit preset, else `<backbone>_<task>` when such a preset exists, else the default
    (the embedded point-mae-mini on shapes) when neither backbone nor task is given."""
    if preset:
        return preset
    if backbone is None and task is None:
        return DEFAULT_PRESET if _canonical(DEFAULT_PRESET) in _known() else None
    wanted = _canonical(f"{backbone or 'point-mae-mini'}_{task or 'shapes'}")
    return wanted if wanted in _known() else None


def _known() -> set[str]:
    return {_canonical(name) for name in list_presets()}
