"""Checkpoint reading (weights_only, unwrapping), exact layout checks, safetensors writing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pointpeft_cli.errors import (
    AssetNotCachedError,
    CorruptFileError,
    LayoutMismatchError,
    UnsafeFileError,
)
from pointpeft_cli.store.checkpoint import (
    check_layout,
    load_checkpoint_state,
    read_checkpoint,
    read_torch_checkpoint,
    write_safetensors,
)
from pointpeft_cli.store.layouts import TensorSpec

LAYOUT = {
    "a.weight": TensorSpec((4, 3), "float32"),
    "a.bias": TensorSpec((4,), "float32"),
    "bn.num_batches_tracked": TensorSpec((), "int64"),
}


class Opaque:
    """A class only full unpickling can rebuild (stands in for arbitrary code)."""

    def __init__(self) -> None:
        self.value = 3


def _state() -> dict[str, torch.Tensor]:
    return {
        "a.weight": torch.randn(4, 3),
        "a.bias": torch.randn(4),
        "bn.num_batches_tracked": torch.tensor(7),
    }


@pytest.mark.parametrize("container", ["base_model", "model", None])
def test_unwraps_container_and_strips_module_prefix(tmp_path: Path, container: str | None) -> None:
    state = {f"module.{k}": v for k, v in _state().items()}
    obj = {container: state, "epoch": 3, "metrics": {"acc": 0.5}} if container else state
    torch.save(obj, tmp_path / "c.pth")
    loaded = read_checkpoint(tmp_path / "c.pth")
    assert set(loaded.state) == set(LAYOUT)
    assert loaded.container_key == container and loaded.stripped_prefix == "module."
    check_layout(loaded.state, LAYOUT, "c.pth", "tiny")


def test_arbitrary_pickle_needs_opt_in(tmp_path: Path) -> None:
    torch.save({"base_model": _state(), "extra": Opaque()}, tmp_path / "p.pth")
    with pytest.raises(UnsafeFileError) as err:
        read_torch_checkpoint(tmp_path / "p.pth")
    assert "--trust-pickle" in (err.value.hint or "") and err.value.exit_code == 4
    assert set(read_torch_checkpoint(tmp_path / "p.pth", trust_pickle=True)) == set(LAYOUT)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_tensors"])
def test_damaged_files_are_corrupt(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "d.pth"
    if damage == "not_tensors":
        torch.save({"base_model": {"a": [1, 2]}}, path)
    else:
        torch.save({"base_model": _state()}, path)
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"\x80\x02" + b"x" * 999)
    with pytest.raises(CorruptFileError):
        read_torch_checkpoint(path)


def test_layout_mismatch_names_the_keys() -> None:
    state = _state()
    del state["a.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["a.weight"] = torch.zeros(4, 2)
    with pytest.raises(LayoutMismatchError) as err:
        check_layout(state, LAYOUT, "x.pth", "tiny")
    msg = err.value.message
    assert "1 missing: a.bias" in msg and "1 unexpected: extra.weight" in msg
    assert "a.weight: (4, 2) float32, expected (4, 3) float32" in msg


def test_layout_checks_dtype() -> None:
    state = _state()
    state["bn.num_batches_tracked"] = torch.tensor(7.0)
    with pytest.raises(LayoutMismatchError, match="num_batches_tracked"):
        check_layout(state, LAYOUT, "x.pth", "tiny")


def test_safetensors_keeps_tensors_and_handles_shared_memory(tmp_path: Path) -> None:
    base = torch.randn(8)
    state = {"w": base, "tied": base, "view": base[:4]}
    write_safetensors(state, tmp_path / "m.safetensors", {"asset": "x"})
    with safe_open(tmp_path / "m.safetensors", "pt") as f:
        assert f.metadata()["format"] == "pt"
        assert torch.equal(f.get_tensor("tied"), base) and torch.equal(
            f.get_tensor("view"), base[:4]
        )
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_load_checkpoint_state_needs_a_cached_asset(cache_home: Path) -> None:
    with pytest.raises(AssetNotCachedError) as err:
        load_checkpoint_state(cache_home, "point-mae")
    assert "pointpeft download point-mae" in (err.value.hint or "")
