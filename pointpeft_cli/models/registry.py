"""Model registry: `@register_model(name)`, `create_model(name, ...)`, `list_models()`."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pointpeft_cli.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from pointpeft_cli.models.classifier import BackboneConfig, PointCloudClassifier
    from pointpeft_cli.peft.config import PointPeftConfig

ConfigFn = Callable[[], "BackboneConfig"]
_REGISTRY: dict[str, ConfigFn] = {}


def register_model(name: str) -> Callable[[ConfigFn], ConfigFn]:
    """Register a function returning the default `BackboneConfig` of backbone `name`."""

    def deco(fn: ConfigFn) -> ConfigFn:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def _load_builtin() -> None:
    # Imported for their @register_model side effect; late to avoid an import cycle.
    from pointpeft_cli.models import point_bert, point_mae  # noqa: F401


def list_models() -> list[str]:
    """Registered backbone names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def default_config(name: str) -> BackboneConfig:
    """The registered default configuration of backbone `name`."""
    _load_builtin()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(_REGISTRY))}"
        raise UsageError(f"unknown backbone {name!r}", hint=hint)
    return _REGISTRY[name]()


def create_model(
    name: str,
    *,
    num_classes: int,
    method: str = "point-peft",
    num_group: int | None = None,
    group_size: int | None = None,
    peft: PointPeftConfig | None = None,
    **overrides: Any,
) -> PointCloudClassifier:
    """Build backbone `name` with its head, and Point-PEFT when `method == "point-peft"`.

    Args:
        name: registered backbone (`point-mae`, `point-bert`, `point-mae-mini`).
        num_classes: classes of the head.
        method: `point-peft`, `full` or `linear`.
        num_group / group_size: the model's own grouping (default: the pre-training one).
        peft: Point-PEFT configuration (default: the original's values).
        **overrides: `BackboneConfig` fields to change (e.g. `depth=2, trans_dim=32`).

    Raises:
        UsageError: unknown backbone or method. ConfigError: unknown override.
    """
    from pointpeft_cli.models.classifier import PointCloudClassifier

    cfg = default_config(name)
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"unknown backbone setting {unknown[0]!r} for {name}",
            hint=f"known settings: {', '.join(sorted(fields))}",
        )
    cfg = dataclasses.replace(cfg, **overrides)
    return PointCloudClassifier(
        cfg,
        num_classes=num_classes,
        method=method,
        num_group=num_group,
        group_size=group_size,
        peft=peft,
    )
