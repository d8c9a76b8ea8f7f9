"""Rebuilding a trained model from a run or an adapter, then evaluating or predicting with it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointpeft_cli.config.schema import RunConfig
from pointpeft_cli.engine.adapter import Adapter, check_base, load_adapter, read_run_config
from pointpeft_cli.engine.evaluate import predict_logits, report_from_logits, voting_views
from pointpeft_cli.engine.memory_bank import load_bank
from pointpeft_cli.engine.metrics import ClassificationReport
from pointpeft_cli.engine.prepare import (
    build_model,
    fixed_view,
    load_split,
    load_weights,
    resolve_sampling,
    unshuffled,
)
from pointpeft_cli.engine.rundir import RunDir
from pointpeft_cli.engine.runtime import pick_device
from pointpeft_cli.errors import DataError, IntegrityError

Progress = Callable[[str, int | None], Callable[[int], None]]


@dataclass
class Trained:
    """A trained model ready for inference, with what it was trained on."""

    model: Any
    cfg: RunConfig
    class_names: tuple[str, ...]
    device: torch.device
    source: str


def _finish(model: Any, bank: Any, tensors: dict[str, torch.Tensor], device: torch.device) -> Any:
    model.load_trainable_state_dict(tensors)
    model.to(device)
    if bank is not None:
        model.set_memory_bank(bank.tensor(device))
    return model.eval()


def from_run(
    run_path: Path, which: str, cache_root: Path, device: str, force: bool = False
) -> Trained:
    """The model of checkpoint `which` (best|last) of a run directory."""
    run = RunDir(run_path)
    cfg = read_run_config(run)
    info = run.read_run_json()
    names = tuple(info["dataset"]["class_names"])
    model = build_model(cfg, len(names))
    weights = load_weights(model, cfg, cache_root)
    expected = info["backbone"]["sha256"]
    if weights.sha256 != expected and not force:
        raise IntegrityError(
            f"backbone sha256 {weights.sha256[:12]} differs from the run's {expected[:12]}",
            hint="use the weights the run was trained with, or pass --force",
        )
    bank = load_bank(run.bank) if cfg.train.method == "point-peft" else None
    dev = pick_device(device)
    return Trained(
        _finish(model, bank, run.load_tensors(which), dev), cfg, names, dev, str(run.path)
    )


def from_adapter(adapter_path: Path, cache_root: Path, device: str, force: bool = False) -> Trained:
    """The model an adapter directory describes, on its (sha256-checked) backbone."""
    adapter: Adapter = load_adapter(adapter_path)
    cfg = adapter.run_config
    model = build_model(cfg, len(adapter.class_names))
    weights = load_weights(model, cfg, cache_root)
    check_base(adapter, weights.sha256, force)
    dev = pick_device(device)
    model = _finish(model, adapter.bank, adapter.tensors, dev)
    return Trained(model, cfg, adapter.class_names, dev, str(adapter.path))


def with_data(cfg: RunConfig, task: str | None, data_dir: Path | None, points: int | None):
    """The run's config with the evaluation data overridden (task, folder, point count)."""
    data = cfg.data
    data = dataclasses.replace(
        data,
        task=task or data.task,
        data_dir=str(data_dir) if data_dir else data.data_dir,
        points=points or data.points,
        max_test_samples=data.max_test_samples,
    )
    return dataclasses.replace(cfg, data=data)


def evaluate_trained(
    trained: Trained,
    cfg: RunConfig,
    cache_root: Path,
    votes: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> ClassificationReport:
    """Scores `trained` on the test split of `cfg`'s task."""
    from pointpeft_cli.data.loader import make_loader

    test_set = load_split(cfg, "test", cache_root)
    if tuple(test_set.class_names) != trained.class_names:
        raise DataError(
            f"the test data has classes {list(test_set.class_names)[:5]}..., the model was "
            f"trained on {list(trained.class_names)[:5]}...",
            hint="evaluate on the task the model was trained for",
        )
    points = resolve_sampling(cfg).points
    bs = batch_size or cfg.eval.batch_size
    if votes > 0:
        data, views = unshuffled(test_set), voting_views(points, votes, cfg.train.seed)
    else:
        data, views = fixed_view(test_set, points), None
    loader = make_loader(data, bs, False, False, seed=0)
    advance = progress("evaluate", len(data)) if progress else None
    logits, labels = predict_logits(trained.model, loader, trained.device, views=views,
                                    on_batch=advance)  # fmt: skip
    return report_from_logits(logits, labels, trained.class_names)


def predict_files(trained: Trained, files: Sequence[Path], top: int = 5) -> list[dict[str, Any]]:
    """Class predictions for point files (`.npy`, `.txt`, `.xyz`, `.ply`)."""
    from pointpeft_cli.data.base import check_cloud, pc_normalize
    from pointpeft_cli.data.io import read_cloud
    from pointpeft_cli.data.sampling import sample_test_batch
    from pointpeft_cli.tasks import get_task

    points = resolve_sampling(trained.cfg).points
    normalize = get_task(trained.cfg.data.task).normalize
    out = []
    for path in files:
        cloud = check_cloud(read_cloud(Path(path)), path, min_points=points)[:, :3]
        if normalize:
            cloud = pc_normalize(cloud)
        batch = sample_test_batch(torch.from_numpy(np.ascontiguousarray(cloud))[None], points)
        with torch.no_grad():
            probs = torch.softmax(trained.model(batch.to(trained.device)).float(), dim=1)[0]
        k = min(top, probs.numel())
        scores, idx = probs.topk(k)
        ranked = [
            [trained.class_names[i], float(s)] for s, i in zip(scores, idx.tolist(), strict=True)
        ]
        out.append(
            {"file": str(path), "label": ranked[0][0], "score": ranked[0][1], "top5": ranked}
        )
    return out
