"""Writes checkpoints in the exact upstream container and key layout, with random tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from pointpeft_cli.store.layouts import load_layout

_DTYPES = {"float32": torch.float32, "int64": torch.int64, "float16": torch.float16}


def official_state_dict(layout: str, seed: int = 0, prefix: str = "") -> dict[str, torch.Tensor]:
    """Random tensors with the keys, shapes and dtypes of an upstream layout.

    BatchNorm running variances are made positive so the tensors are usable in a forward pass.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, spec in load_layout(layout).items():
        dtype = _DTYPES[spec.dtype]
        if dtype == torch.int64:
            t = torch.randint(0, 1000, spec.shape, generator=gen, dtype=torch.int64)
        elif key.endswith("running_var"):
            t = torch.rand(spec.shape, generator=gen) + 0.5
        elif key.endswith(("norm1.weight", "norm2.weight", "norm.weight")) or ".1.weight" in key:
            t = 1.0 + 0.1 * torch.randn(spec.shape, generator=gen)
        else:
            t = 0.02 * torch.randn(spec.shape, generator=gen)
        out[prefix + key] = t.to(dtype)
    return out


def write_official_checkpoint(
    path: Path, layout: str = "mae_pretrain", seed: int = 0, module_prefix: bool = False
) -> Path:
    """Save `{'base_model': ..., 'epoch', 'metrics'}` as upstream's save_checkpoint does."""
    state = official_state_dict(layout, seed=seed, prefix="module." if module_prefix else "")
    ckpt = {"base_model": state, "epoch": 300, "metrics": {"acc": 0.0}, "best_metrics": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path
