"""The run directory (cli.md): resolved config, metrics, checkpoints, memory bank and run.json."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pointpeft_cli.config.schema import RunConfig
from pointpeft_cli.errors import CorruptFileError, UsageError
from pointpeft_cli.fsutil import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    sort_safetensors_metadata,
)

RUNS_DIR = Path("runs")


def default_run_dir(name: str, root: Path = RUNS_DIR) -> Path:
    """`runs/<name>-<YYYYmmdd-HHMMSS>`, made unique if a run started in the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{name}-{stamp}-{n}"
    return path


def latest_run(root: Path = RUNS_DIR) -> Path:
    """The most recently updated run directory under `root` (what `evaluate` uses by default)."""
    runs = [p.parent for p in root.glob("*/run.json")] if root.is_dir() else []
    if not runs:
        raise UsageError(
            f"no runs found under {root}/", hint="run `pointpeft finetune` first, or pass --run DIR"
        )
    return max(runs, key=lambda p: (p / "run.json").stat().st_mtime)


def missing_dirs(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, deepest first (what a new run creates)."""
    out: list[Path] = []
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def protocol(cfg: RunConfig, sampling: Any) -> dict[str, Any]:
    """How results were produced (method.md decision 6)."""
    return {
        "points": sampling.points,
        "num_group": sampling.num_group,
        "group_size": sampling.group_size,
        "train_sampling": "FPS to point_all, then a random subset of `points` (upstream)",
        "test_sampling": "FPS of `points` from index 0, no augmentation",
        "train_augment": cfg.data.train_augment,
        "votes": cfg.eval.votes,
        "seed": cfg.train.seed,
        "selection": (
            "best test accuracy over epochs (as the papers report)"
            if cfg.train.select == "best"
            else "last epoch"
        ),
        "checkpoint_select": cfg.train.select,
        "memory_bank_exclude_self": bool(cfg.peft.get("exclude_self", False)),
        "retrieval_query_cache": bool(cfg.peft.get("query_cache", False)),
        "frozen_backbone_batchnorm": "eval mode (running statistics frozen)",
        "epochs": cfg.train.epochs,
        "batch_size": cfg.train.batch_size,
    }


def last_scores(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The test scores of the last evaluated epoch in a run's history."""
    for record in reversed(history):
        if "test_accuracy" in record:
            return {
                "epoch": record["epoch"],
                "accuracy": record["test_accuracy"],
                "mean_class_accuracy": record["test_mean_class_accuracy"],
            }
    return None


class RunDir:
    """Paths and atomic writers of one run directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    run_json = property(lambda self: self.path / "run.json")
    bank = property(lambda self: self.path / "memory_bank.h5")
    checkpoints = property(lambda self: self.path / "checkpoints")
    resume_state = property(lambda self: self.path / "checkpoints" / "last.pt")

    def tensors(self, which: str) -> Path:
        """`checkpoints/{best,last}.safetensors`."""
        if which not in ("best", "last"):
            raise UsageError(f"unknown checkpoint {which!r}", hint="use best or last")
        return self.checkpoints / f"{which}.safetensors"

    def prepare(self, resume: bool) -> None:
        """Creates the directory; a non-empty one is only reused with --resume.

        A resumed run first removes the temp files a killed process left behind (`.*.incomplete`:
        never renamed, so never part of the run).
        """
        if resume:
            if not self.config.is_file():
                raise UsageError(
                    f"nothing to resume in {self.path}: no config.yaml",
                    hint="start a new run without --resume",
                )
            self.sweep_partials()
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            return
        if self.path.exists() and any(self.path.iterdir()):
            raise UsageError(
                f"run directory {self.path} is not empty",
                hint="pass --resume to continue it, or choose another --out",
            )
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def sweep_partials(self) -> list[Path]:
        """Removes temp files of interrupted atomic writes; returns what was removed."""
        removed = []
        for folder in (self.path, self.checkpoints):
            for tmp in sorted(folder.glob(".*.incomplete")) if folder.is_dir() else ():
                if tmp.is_file():
                    tmp.unlink()
                    removed.append(tmp)
        return removed

    def has_checkpoint(self) -> bool:
        """Whether an epoch has been saved (what `--resume` continues from)."""
        return self.resume_state.is_file()

    def discard_unstarted(self, created: list[Path]) -> None:
        """Removes what a new run wrote before it failed without saving an epoch.

        Only pointpeft's own files are removed, then the directories in `created` (the run
        directory and parents this run made) if they are empty.
        """
        for name in (self.config, self.metrics, self.run_json, self.bank):
            name.unlink(missing_ok=True)
        for which in ("best", "last"):
            self.tensors(which).unlink(missing_ok=True)
        self.sweep_partials()
        for path in (self.checkpoints, *created):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()

    def write_text(self, path: Path, text: str) -> None:
        atomic_write_text(path, text)

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrites metrics.jsonl from the full history (so it always matches the checkpoint)."""
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
        atomic_write_text(self.metrics, lines)

    def write_run_json(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.run_json, info)

    def read_run_json(self) -> dict[str, Any]:
        try:
            return json.loads(self.run_json.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(
                f"{self.path} is not a run directory (no run.json)",
                hint="pass the directory `pointpeft finetune` wrote",
            ) from None
        except (OSError, ValueError) as exc:
            raise CorruptFileError(f"cannot read {self.run_json}: {exc}") from None

    def save_tensors(
        self, which: str, tensors: dict[str, torch.Tensor], meta: dict[str, str]
    ) -> None:
        clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}

        def write(tmp: Path) -> None:
            save_file(clean, str(tmp), metadata=meta)
            sort_safetensors_metadata(tmp)  # same tensors, same bytes

        atomic_write(self.tensors(which), write)

    def load_tensors(self, which: str) -> dict[str, torch.Tensor]:
        path = self.tensors(which)
        if not path.is_file():
            raise UsageError(f"{path} does not exist", hint="has the run finished an epoch yet?")
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CorruptFileError(f"cannot read {path}: {exc}") from None

    def copy_bank(self, source: Path) -> None:
        """Copies the cached memory bank into the run (atomically)."""
        atomic_write(self.bank, lambda tmp: shutil.copyfile(source, tmp))

    def save_resume(self, state: dict[str, Any]) -> None:
        atomic_write(self.resume_state, lambda tmp: torch.save(state, tmp))

    def load_resume(self) -> dict[str, Any]:
        try:
            return torch.load(self.resume_state, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CorruptFileError(
                f"cannot read {self.resume_state}: {str(exc).splitlines()[0]}",
                hint="the last checkpoint is damaged; start a new run",
            ) from None
