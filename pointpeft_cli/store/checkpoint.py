"""Checkpoint files: safe loading, exact layout checks, safetensors conversion, cached reads."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pointpeft_cli.errors import (
    ChecksumMismatchError,
    CorruptFileError,
    LayoutMismatchError,
    UnsafeFileError,
    UsageError,
)
from pointpeft_cli.fsutil import sort_safetensors_metadata
from pointpeft_cli.store.cache import (
    PARTIAL_SUFFIX,
    asset_path,
    manifest_files,
    read_manifest,
    short_id,
)
from pointpeft_cli.store.hashing import sha256_file
from pointpeft_cli.store.layouts import TensorSpec
from pointpeft_cli.store.registry import get_asset

SAFETENSORS_NAME = "model.safetensors"
CONTAINER_KEYS = ("base_model", "model", "state_dict")
_PICKLE_GLOBAL_MARKERS = ("allowed global", "Unsupported global")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint's state dict plus how it was unwrapped (recorded in the manifest)."""

    state: dict[str, torch.Tensor]
    container_key: str | None
    stripped_prefix: str | None


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _load_pickled(path: Path, trust_pickle: bool) -> Any:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if not zipfile.is_zipfile(path) and magic[:1] != b"\x80":
        raise CorruptFileError(
            f"{path.name} is not a PyTorch checkpoint (neither a torch zip nor a pickle)",
            hint="check that the file downloaded completely",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not any(m in str(exc) for m in _PICKLE_GLOBAL_MARKERS):
            raise CorruptFileError(f"{path.name} is corrupt: cannot unpickle it") from None
        if not trust_pickle:
            raise UnsafeFileError(
                f"{path.name} holds Python objects beyond tensors; loading it could run code",
                hint="only if you trust its source, re-run with --trust-pickle",
            ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CorruptFileError(
            f"{path.name} is corrupt or truncated: {str(exc).splitlines()[0][:160]}",
            hint="download it again (or use --force to replace a cached copy)",
        ) from None
    return torch.load(path, map_location="cpu", weights_only=False)  # explicit opt-in only


def unwrap_state(obj: Any, name: str) -> LoadedCheckpoint:
    """Take `base_model` / `model` / `state_dict` (or a bare state dict) and strip `module.`."""
    container_key = None
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                container_key, obj = key, obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CorruptFileError(
            f"{name} holds no state dict (expected a dict with 'base_model' or 'model')"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CorruptFileError(f"{name}: state dict entry {bad[0]!r} is not a tensor")
    # DataParallel/DDP checkpoints prefix every key with `module.`; every upstream loader strips it
    stripped = "module." if all(k.startswith("module.") for k in obj) else None
    state = {(k[len("module.") :] if stripped else k): v for k, v in obj.items()}
    return LoadedCheckpoint(state, container_key, stripped)


def read_checkpoint(path: Path, trust_pickle: bool = False) -> LoadedCheckpoint:
    """Load a `.pth`/`.pt` (weights_only unless trusted) or `.safetensors` checkpoint."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return LoadedCheckpoint(load_file(path), None, None)
        except (SafetensorError, OSError, ValueError) as exc:
            raise CorruptFileError(f"{path.name} is not a valid safetensors file: {exc}") from None
    return unwrap_state(_load_pickled(path, trust_pickle), path.name)


def read_torch_checkpoint(path: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The unwrapped state dict (upstream key names, `module.` stripped) of any checkpoint file.

    Raises:
        UnsafeFileError: the file needs arbitrary unpickling and `trust_pickle` is False.
        CorruptFileError: the file is truncated, not a checkpoint, or holds no tensors.
    """
    return read_checkpoint(Path(path), trust_pickle).state


def _shape_text(shape: tuple[int, ...], dtype: str) -> str:
    return f"({', '.join(map(str, shape))}) {dtype}"


def check_layout(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, TensorSpec], source: str, layout: str
) -> None:
    """Require exactly the expected keys, shapes and dtypes.

    Raises:
        LayoutMismatchError: names the first offending keys of each kind (exit 4).
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: {_shape_text(tuple(t.shape), _dtype_name(t))}, expected "
        f"{_shape_text(expected[k].shape, expected[k].dtype)}"
        for k, t in state.items()
        if k in expected
        and (tuple(t.shape) != expected[k].shape or _dtype_name(t) != expected[k].dtype)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong", wrong)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {'; '.join(items[:3])}{more}")
    if problems:
        raise LayoutMismatchError(
            f"{source} does not match the {layout} layout ({len(expected)} tensors): "
            + " | ".join(problems),
            hint="this is not the expected upstream checkpoint; check the file or its source",
        )


def write_safetensors(
    state: Mapping[str, torch.Tensor], dest: Path, metadata: dict[str, str]
) -> None:
    """Write `state` as safetensors atomically (temp file in the same directory, then rename)."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        t = t.detach().contiguous()
        ptr = t.untyped_storage().data_ptr()
        # safetensors refuses tensors that share memory; tied or viewed weights get their own copy
        tensors[key] = t.clone() if ptr in seen else t
        seen.add(ptr)
    tmp = dest.with_name(f"{dest.name}.{short_id()}{PARTIAL_SUFFIX}")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", **metadata})
        sort_safetensors_metadata(tmp)  # identical tensors give identical bytes
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint_state(root: Path, asset_id: str) -> dict[str, torch.Tensor]:
    """The verified weights of a cached checkpoint asset (upstream key names).

    The safetensors file is re-hashed against the manifest on every call, so a cached file that
    changed after the first download is never used.

    Raises:
        AssetNotCachedError: the asset is not cached (exit 3, with the download hint).
        ChecksumMismatchError: the cached file no longer matches its manifest (exit 4).
    """
    if get_asset(asset_id).kind != "checkpoint":
        raise UsageError(f"{asset_id} is not a checkpoint asset")
    directory = asset_path(root, asset_id)
    manifest = read_manifest(directory) or {}
    record = next((r for r in manifest_files(manifest) if r.name == SAFETENSORS_NAME), None)
    path = directory / SAFETENSORS_NAME
    if record is None or not path.is_file():
        raise CorruptFileError(
            f"{directory} has no {SAFETENSORS_NAME}",
            hint=f"run `pointpeft download {asset_id} --force`",
        )
    if path.stat().st_size != record.bytes or sha256_file(path) != record.sha256:
        raise ChecksumMismatchError(
            f"{path} changed since it was verified (sha256 differs from the manifest)",
            hint=f"run `pointpeft download {asset_id} --force` to fetch a fresh copy",
        )
    return read_checkpoint(path).state


def checkpoint_sha256(root: Path, asset_id: str) -> str:
    """The pinned sha256 of a cached checkpoint's original file (what adapters record)."""
    manifest = read_manifest(asset_path(root, asset_id)) or {}
    return str(manifest["sha256"])
