"""Reading checkpoints safely, per-family key filters, and the load report.

Filters follow the upstream loaders (`formats.md` §4): Point-MAE strips `module.`,
`MAE_encoder.` and `base_model.`; Point-BERT keeps `transformer_q.*` (minus its pre-training
`cls_head`) and drops the dVAE, the momentum encoder and the MoCo queue.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pointpeft_cli.errors import CorruptFileError, LayoutMismatchError, UnsafeFileError

CheckpointFilter = Callable[[Mapping[str, Tensor]], dict[str, str]]


@dataclass(frozen=True)
class LoadReport:
    """What loading a checkpoint did.

    Attributes:
        matched: model keys filled from the file.
        missing: model keys the file did not provide (they keep their initial values).
        unexpected: file keys that were not used (original names).
        mismatched: model keys whose tensor in the file has another shape.
    """

    matched: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-ready lists."""
        return {
            "matched": self.matched,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": self.mismatched,
        }


def unwrap_checkpoint(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """The flat tensor dict of an upstream container (`base_model` / `model`) or a bare dict."""
    if isinstance(obj, Mapping):
        for key in ("base_model", "model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
    raise CorruptFileError(
        f"{source} holds no tensor state dict",
        hint="pass an upstream .pth (with 'base_model') or a .safetensors file",
    )


def read_state_file(path: Path) -> dict[str, Tensor]:
    """Load a `.safetensors` or a torch `.pth`/`.pt` file without arbitrary unpickling.

    Raises:
        UnsafeFileError: the file needs pickle beyond plain tensors and containers.
        CorruptFileError: the file cannot be parsed.
    """
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CorruptFileError(
                f"cannot read {path}: {exc}", hint="re-download or re-export the file"
            ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeFileError(
            f"{path} needs arbitrary unpickling, which pointpeft refuses ({first})",
            hint="convert it to .safetensors in a trusted environment, or use an official file",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CorruptFileError(
            f"cannot read {path}: {exc}", hint="re-download the checkpoint"
        ) from None
    return unwrap_checkpoint(obj, str(path))


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def filter_point_mae(state: Mapping[str, Tensor]) -> dict[str, str]:
    """Point-MAE mapping: file key -> model key (upstream `load_model_from_ckpt`)."""
    out: dict[str, str] = {}
    for key in state:
        name = key.replace("module.", "")
        name = _strip(_strip(name, "MAE_encoder."), "base_model.")
        out[key] = name
    return out


_BERT_DROP = ("dvae.", "transformer_k.", "queue", "lm_head.", "mask_token", "cls_head")


def filter_point_bert(state: Mapping[str, Tensor]) -> dict[str, str]:
    """Point-BERT mapping: keep `transformer_q.*` / `base_model.*` minus pre-training parts."""
    out: dict[str, str] = {}
    for key in state:
        name = key.replace("module.", "")
        for prefix in ("transformer_q.", "base_model."):
            if name.startswith(prefix):
                inner = name[len(prefix) :]
                if not inner.startswith(_BERT_DROP):
                    out[key] = inner
                break
    return out


FILTERS: dict[str, CheckpointFilter] = {
    "point-mae": filter_point_mae,
    "point-bert": filter_point_bert,
}


def build_report(
    model_state: Mapping[str, Tensor], file_state: Mapping[str, Tensor], mapping: dict[str, str]
) -> tuple[LoadReport, dict[str, Tensor]]:
    """Match mapped file keys against the model; return the report and the tensors to load."""
    loadable: dict[str, Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, tensor in file_state.items():
        target = mapping.get(key)
        if target is None or target not in model_state:
            unexpected.append(key)
        elif tuple(model_state[target].shape) != tuple(tensor.shape):
            mismatched.append(target)
        else:
            loadable[target] = tensor
    missing = [k for k in model_state if k not in loadable and k not in mismatched]
    matched = [k for k in model_state if k in loadable]
    return LoadReport(matched, missing, unexpected, mismatched), loadable


def check_backbone(report: LoadReport, required: set[str], source: str) -> None:
    """Raise LayoutMismatchError if a backbone key is missing or has the wrong shape."""
    bad_shape = [k for k in report.mismatched if k in required]
    absent = [k for k in report.missing if k in required]
    if not bad_shape and not absent:
        return
    if bad_shape:
        what = f"{len(bad_shape)} backbone tensor(s) with the wrong shape (first: {bad_shape[0]})"
    else:
        what = f"{len(absent)} backbone tensor(s) missing (first: {absent[0]})"
    raise LayoutMismatchError(
        f"{source} does not fit this backbone: {what}",
        hint="check --backbone (point-mae / point-bert / point-mae-mini) against the file",
    )
