"""The run configuration: frozen dataclasses with strict, typed construction from dicts."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pointpeft_cli.errors import ConfigError

METHODS = ("point-peft", "full", "linear")


@dataclass(frozen=True)
class DataConfig:
    """What to train and evaluate on, and how it is sampled."""

    task: str = "shapes"
    data_dir: str | None = None
    points: int | None = None  # None: the task's upstream default (tasks.py)
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    train_augment: str = "scale_translate"  # scale_translate | scale_rotate | none
    trust_pickle: bool = False
    way: int = 5
    shot: int = 10
    fold: int = 0
    shapes_train_size: int = 2400
    shapes_test_size: int = 600


@dataclass(frozen=True)
class ModelConfig:
    """The backbone and its grouping; PEFT settings live in `peft`."""

    backbone: str = "point-mae-mini"
    pretrained: bool = True  # False: random init (to show what pre-training buys)
    checkpoint: str | None = None  # a file instead of the cached/embedded weights
    num_group: int | None = None  # None: the task default
    group_size: int | None = None
    drop_path_rate: float = 0.1


@dataclass(frozen=True)
class MemoryBankConfig:
    """How the Point-prior memory bank is built (method.md decision 4); its use is `peft.*`."""

    batch_size: int = 64


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and loop settings (upstream recipe by default, method.md §8)."""

    method: str = "point-peft"
    epochs: int = 300
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 10
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    grad_clip: float | None = 10.0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto (bf16 on CUDA when supported) | off | bf16 | fp16; CPU is always fp32
    deterministic: bool = False
    eval_every: int = 1
    select: str = "best"  # best (on the test split, as the papers report) | last
    nan_policy: str = "stop"  # stop | skip
    num_workers: int = 0
    recompute_mlp: bool = False  # re-run norm2 -> fc1 -> GELU in backward: less memory, more time


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings."""

    batch_size: int = 64
    votes: int = 0  # 0: single deterministic pass; N: N augmented passes, logits averaged


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; `peft` holds PointPeftConfig fields (the model layer checks them)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: dict[str, Any] = field(default_factory=dict)
    memory_bank: MemoryBankConfig = field(default_factory=MemoryBankConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {
    ("train", "method"): METHODS,
    ("train", "amp"): ("auto", "off", "bf16", "fp16"),
    ("train", "select"): ("best", "last"),
    ("train", "nan_policy"): ("stop", "skip"),
    ("data", "train_augment"): ("scale_translate", "scale_rotate", "none"),
}


def _suggest(name: str, options: typing.Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _coerce(path: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a field annotation (str, int, float, bool, optional forms)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(path, value, inner[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif origin is dict or annotation is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        return value
    name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"{path} must be {name}, got {value!r}", hint=f"e.g. --set {path}=...")


def _build_section(cls: type, section: str, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{section}.{key}"
        if key not in hints:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = (
                f"did you mean '{section}.{close[0]}'?"
                if close
                else f"keys of {section}: {', '.join(names)}"
            )
            raise ConfigError(f"unknown config key {path!r}", hint=hint)
        kwargs[key] = _coerce(path, value, hints[key])
        choices = _CHOICES.get((section, key))
        if choices and kwargs[key] not in choices:
            raise ConfigError(
                f"{path} must be one of {', '.join(choices)}, got {value!r}",
                hint=_suggest(str(value), choices),
            )
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Strictly build a RunConfig: unknown sections/keys and mistyped values raise ConfigError."""
    sections = {f.name: f for f in dataclasses.fields(RunConfig)}
    hints = typing.get_type_hints(RunConfig)
    built: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in sections:
            hint = _suggest(name, sections) or f"sections: {', '.join(sections)}"
            raise ConfigError(f"unknown config section {name!r}", hint=hint)
        if not isinstance(values, dict):
            raise ConfigError(f"config section {name!r} must be a mapping, got {values!r}")
        if name == "peft":
            built[name] = dict(values)
        else:
            built[name] = _build_section(hints[name], name, values)
    cfg = RunConfig(**built)
    _check_ranges(cfg)
    return cfg


def _check_finite(cfg: RunConfig) -> None:
    for section in ("data", "model", "memory_bank", "train", "eval"):
        for f in dataclasses.fields(getattr(cfg, section)):
            value = getattr(getattr(cfg, section), f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section}.{f.name} must be a finite number, got {value}")


def _check_ranges(cfg: RunConfig) -> None:
    _check_finite(cfg)
    for path, value in (
        ("model.num_group", cfg.model.num_group),
        ("model.group_size", cfg.model.group_size),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{path} must be >= 1, got {value}", hint="or null for the default")
    positive = {
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size,
        "eval.batch_size": cfg.eval.batch_size,
        "memory_bank.batch_size": cfg.memory_bank.batch_size,
        "train.eval_every": cfg.train.eval_every,
    }
    for path, value in positive.items():
        if value < 1:
            raise ConfigError(f"{path} must be >= 1, got {value}")
    if cfg.train.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {cfg.train.lr}")
    if cfg.data.points is not None and cfg.data.points < 1:
        raise ConfigError(f"data.points must be >= 1, got {cfg.data.points}")
    if cfg.eval.votes < 0:
        raise ConfigError(f"eval.votes must be >= 0, got {cfg.eval.votes}")
    for path, value in (
        ("data.max_train_samples", cfg.data.max_train_samples),
        ("data.max_test_samples", cfg.data.max_test_samples),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{path} must be >= 1, got {value}")
