"""Adapter directories (cli.md): export from a run, load, and rebuild the model they belong to."""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from pointpeft_cli import __version__
from pointpeft_cli.config.schema import RunConfig, config_from_dict
from pointpeft_cli.engine.memory_bank import MemoryBank, load_bank
from pointpeft_cli.engine.rundir import RunDir
from pointpeft_cli.errors import CorruptFileError, IntegrityError, UsageError
from pointpeft_cli.fsutil import atomic_write_json

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
BANK = "memory_bank.h5"


@dataclass
class Adapter:
    """A loaded adapter directory."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    bank: MemoryBank | None

    @property
    def run_config(self) -> RunConfig:
        return config_from_dict(self.config["run_config"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config["class_names"])


def read_run_config(run: RunDir) -> RunConfig:
    """The resolved config a run saved."""
    try:
        return config_from_dict(yaml.safe_load(run.config.read_text(encoding="utf-8")) or {})
    except FileNotFoundError:
        raise UsageError(f"{run.path} has no config.yaml", hint="is it a run directory?") from None


def adapter_config(run: RunDir, cfg: RunConfig, which: str) -> dict[str, Any]:
    """The adapter_config.json content for checkpoint `which` of a run."""
    info = run.read_run_json()
    history = [json.loads(line) for line in run.metrics.read_text().splitlines() if line]
    best = info.get("best") or {}
    epoch = best.get("epoch") if which == "best" else (history[-1]["epoch"] if history else None)
    return {
        "pointpeft_version": __version__,
        "method": cfg.train.method,
        "backbone": cfg.model.backbone,
        "base_sha256": info["backbone"]["sha256"],
        "base_source": info["backbone"]["source"],
        "task": cfg.data.task,
        "class_names": info["dataset"]["class_names"],
        "checkpoint": which,
        "epoch": epoch,
        "metrics": best if which == "best" else info.get("last"),
        "peft": cfg.peft,
        "protocol": info.get("protocol", {}),
        "run_config": cfg.to_dict(),
    }


def export_adapter(run_path: Path, out: Path, which: str = "best", force: bool = False) -> Path:
    """Writes the adapter directory `out` from run `run_path` (complete, or not at all)."""
    run = RunDir(run_path)
    cfg = read_run_config(run)
    tensors = run.load_tensors(which)
    config = adapter_config(run, cfg, which)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(f"{out} exists and is not empty", hint="choose another --out, or --force")
    stage = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.incomplete")
    stage.mkdir(parents=True)
    try:
        clean = {k: v.contiguous().clone() for k, v in tensors.items()}
        save_file(clean, str(stage / WEIGHTS), metadata={"format": "pt"})
        atomic_write_json(stage / CONFIG, config)
        if cfg.train.method == "point-peft":
            shutil.copyfile(run.bank, stage / BANK)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return out


def load_adapter(path: Path) -> Adapter:
    """Reads an adapter directory; malformed content raises CorruptFileError (exit 4)."""
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise UsageError(
            f"{path} is not an adapter directory (needs {CONFIG} and {WEIGHTS})",
            hint="create one with `pointpeft export-adapter --run RUN --out DIR`",
        )
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        missing = [
            k
            for k in ("backbone", "method", "class_names", "base_sha256", "run_config")
            if k not in config
        ]
        if missing:
            raise KeyError(f"missing {', '.join(missing)}")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{path / CONFIG} is not a valid adapter config: {exc}") from None
    try:
        tensors = load_file(str(path / WEIGHTS))
    except Exception as exc:  # safetensors raises its own error types
        raise CorruptFileError(f"cannot read {path / WEIGHTS}: {exc}") from None
    bank = load_bank(path / BANK) if config["method"] == "point-peft" else None
    return Adapter(path, config, tensors, bank)


def check_base(adapter: Adapter, base_sha256: str, force: bool) -> None:
    """The backbone must be the one the adapter was trained on (exit 4 unless `force`)."""
    expected = adapter.config["base_sha256"]
    if base_sha256 != expected and not force:
        raise IntegrityError(
            f"backbone sha256 {base_sha256[:12]} differs from the adapter's {expected[:12]}",
            hint="use the backbone weights the adapter was trained on, or pass --force",
        )
