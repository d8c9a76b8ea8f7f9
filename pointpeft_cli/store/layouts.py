"""Expected key/shape/dtype layouts of upstream checkpoints (generated from the upstream models)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

LAYOUT_FILES = {
    "mae_pretrain": "mae_pretrain_keys.tsv",
    "mae_finetune": "mae_finetune_keys.tsv",
    "bert_pretrain": "bert_pretrain_keys.tsv",
    "bert_finetune": "bert_finetune_keys.tsv",
    "dvae": "dvae_keys.tsv",
    "m2ae_pretrain": "m2ae_pretrain_keys.tsv",
    "m2ae_finetune": "m2ae_finetune_keys.tsv",
}


@dataclass(frozen=True)
class TensorSpec:
    """One expected tensor: shape and dtype name (`float32`, `int64`)."""

    shape: tuple[int, ...]
    dtype: str


def _parse_shape(text: str) -> tuple[int, ...]:
    inner = text.strip().strip("()").strip()
    return tuple(int(p) for p in inner.split(",") if p.strip())


@cache
def load_layout(name: str) -> dict[str, TensorSpec]:
    """The ordered key -> TensorSpec mapping of a named upstream layout."""
    if name not in LAYOUT_FILES:
        raise KeyError(f"unknown checkpoint layout {name!r}; known: {sorted(LAYOUT_FILES)}")
    files = resources.files("pointpeft_cli.store")
    text = files.joinpath("layouts", LAYOUT_FILES[name]).read_text()
    layout: dict[str, TensorSpec] = {}
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        layout[key] = TensorSpec(_parse_shape(shape), dtype.strip())
    return layout
