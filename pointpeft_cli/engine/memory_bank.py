"""The Point-prior memory bank: frozen-backbone features of the training split, stored as h5.

Layout (method.md decision 4): `features` [N, D] float32 with L2-normalised rows (row-major; the
original's `cache_shape.pt` is the transpose, [D, N]), `labels` [N] int64, and attributes that
record what produced it (backbone and its sha256, dataset fingerprint, split, points, config).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pointpeft_cli import __version__
from pointpeft_cli.errors import CorruptFileError
from pointpeft_cli.fsutil import atomic_write

FORMAT = "pointpeft-memory-bank/1"


@dataclass
class MemoryBank:
    """Bank rows (one per training sample, in dataset order) and their provenance."""

    features: np.ndarray  # [N, D] float32, rows L2-normalised
    labels: np.ndarray  # [N] int64
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The features as a float32 tensor on `device`."""
        return torch.from_numpy(np.ascontiguousarray(self.features)).to(device)


def bank_cache_key(backbone_sha256: str, dataset_fingerprint: str, config: dict[str, Any]) -> str:
    """A short key for (backbone weights, data, feature config): equal keys = equal banks."""
    blob = json.dumps(
        {"backbone": backbone_sha256, "data": dataset_fingerprint, "config": config, "f": FORMAT},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@torch.no_grad()
def compute_bank(
    features_fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    num_samples: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Runs `features_fn` over (points, labels, indices) batches and fills rows by index.

    Rows are placed by each sample's dataset index, so the result does not depend on batch order
    or on how samples were split across processes. Every index must be seen exactly once.
    """
    feats: np.ndarray | None = None
    labels = np.full(num_samples, -1, dtype=np.int64)
    seen = np.zeros(num_samples, dtype=bool)
    for points, batch_labels, indices in batches:
        out = features_fn(points).float()
        out = torch.nn.functional.normalize(out, dim=1).cpu().numpy()
        if feats is None:
            feats = np.zeros((num_samples, out.shape[1]), dtype=np.float32)
        idx = indices.cpu().numpy()
        feats[idx] = out
        labels[idx] = batch_labels.cpu().numpy()
        seen[idx] = True
        if on_batch is not None:
            on_batch(len(idx))
    if feats is None or not seen.all():
        missing = int((~seen).sum())
        raise CorruptFileError(f"memory bank incomplete: {missing} of {num_samples} rows missing")
    return feats, labels


def save_bank(path: Path, bank: MemoryBank) -> Path:
    """Writes the bank atomically (temp file, then rename)."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("features", data=bank.features.astype(np.float32, copy=False))
            fh.create_dataset("labels", data=bank.labels.astype(np.int64, copy=False))
            fh.attrs["format"] = FORMAT
            fh.attrs["pointpeft_version"] = __version__
            fh.attrs["meta"] = json.dumps(bank.meta, sort_keys=True)

    return atomic_write(Path(path), write)


def load_bank(path: Path) -> MemoryBank:
    """Reads and checks a bank file; anything malformed raises CorruptFileError (exit 4)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as fh:
            if fh.attrs.get("format") != FORMAT or "features" not in fh or "labels" not in fh:
                raise CorruptFileError(
                    f"{path} is not a pointpeft memory bank",
                    hint="rebuild it with `pointpeft build-memory-bank`",
                )
            features = np.asarray(fh["features"][()], dtype=np.float32)
            labels = np.asarray(fh["labels"][()], dtype=np.int64)
            meta = json.loads(str(fh.attrs.get("meta", "{}")))
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptFileError(
            f"cannot read memory bank {path}: {str(exc).splitlines()[0]}",
            hint="rebuild it with `pointpeft build-memory-bank`",
        ) from None
    if features.ndim != 2 or labels.shape != (features.shape[0],) or features.shape[0] == 0:
        raise CorruptFileError(f"memory bank {path} has inconsistent shapes {features.shape}")
    if not np.isfinite(features).all():
        raise CorruptFileError(f"memory bank {path} holds NaN or inf values")
    return MemoryBank(features, labels, meta)
