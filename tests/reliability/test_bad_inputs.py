"""Bad-input corpus, through the CLI with --json: each case gives its documented exit code and a
one-line message naming the problem, no traceback, and leaves the cache and the run directory
byte-for-byte as they were (trees hashed before and after)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.cli_helpers import run_cli
from tests.reliability.harness import (
    TINY,
    TINY_BANK,
    assert_clean_failure,
    assert_unchanged,
    tree_snapshot,
)
from tests.test_data_factories import write_modelnet_h5, write_modelnet_text, write_scan_h5

MINI = ["--backbone", "point-mae-mini", "--set", "model.pretrained=false"]


def expect(code: int, words: tuple[str, ...], roots: list[Path], *args: str) -> dict:
    """Run `pointpeft ARGS --json`: a clean failure, and every root unchanged."""
    before = tree_snapshot(*roots)
    error = assert_clean_failure(run_cli(*args, "--json"), code, *words)
    assert_unchanged(before, tree_snapshot(*roots))
    return error


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# ---- checkpoints: .pth and .safetensors ----------------------------------------------------


def _pth(path: Path, state: dict) -> Path:
    torch.save({"base_model": state, "epoch": 1}, path)
    return path


def _small_state(layout: str, shape=(2,)) -> dict[str, torch.Tensor]:
    from pointpeft_cli.store.layouts import load_layout

    return {k: torch.zeros(shape) for k in load_layout(layout)}


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda p: _truncate(_pth(p, _small_state("mae_pretrain"))), 4, ("pretrain.pth",)),
        (lambda p: p.write_bytes(b"\x80\x04" + bytes(range(256)) * 8), 4, ("pretrain.pth",)),
        (lambda p: p.write_bytes(b""), 4, ("pretrain.pth",)),
        (lambda p: _pth(p, {"foo.weight": torch.zeros(3)}), 4, ("layout", "missing")),
        (lambda p: _pth(p, _small_state("mae_pretrain")), 4, ("layout", "wrong")),
        (lambda p: _pth(p, _small_state("bert_pretrain")), 4, ("layout", "unexpected")),
        (lambda p: torch.save([1, 2, 3], p), 4, ("no state dict",)),
    ],
    ids=[
        "truncated",
        "garbage",
        "empty",
        "wrong-keys",
        "wrong-shapes",
        "other-backbone",
        "not-a-state-dict",
    ],
)
def test_bad_checkpoint_import(make, code: int, words: tuple[str, ...], tmp_path: Path,
                               cache_home: Path) -> None:  # fmt: skip
    src = tmp_path / "pretrain.pth"
    make(src)
    expect(code, words, [cache_home, tmp_path], "download", "point-mae", "--from", str(src))


def test_bad_checkpoint_file_for_finetune(tmp_path: Path, cache_home: Path) -> None:
    bad = tmp_path / "weights.safetensors"
    save_file({"a": torch.zeros(64)}, str(bad))
    _truncate(bad)
    roots = [cache_home, tmp_path]
    out = tmp_path / "run"
    args = ("finetune", *TINY, "--epochs", "1", "--out", str(out))
    expect(4, ("weights.safetensors",), roots, *args, "--set", f"model.checkpoint={bad}")
    other = _pth(tmp_path / "bert.pth", _small_state("bert_pretrain"))
    expect(4, ("bert.pth",), roots, *args, "--set", f"model.checkpoint={other}")
    assert not out.exists()


@pytest.mark.parametrize("which", ["last", "best"])
def test_torn_run_checkpoint(run_dir: Path, cache_home: Path, tmp_path: Path, which: str) -> None:
    _truncate(run_dir / "checkpoints" / f"{which}.safetensors", 0.3)
    roots = [cache_home, run_dir]
    word = f"{which}.safetensors"
    expect(4, (word,), roots, "evaluate", "--run", str(run_dir), "--checkpoint", which)
    out = tmp_path / "exported"
    expect(4, (word,), [*roots, out], "export-adapter", "--run", str(run_dir),
           "--checkpoint", which, "--out", str(out))  # fmt: skip


def test_torn_resume_state(run_dir: Path, cache_home: Path) -> None:
    _truncate(run_dir / "checkpoints" / "last.pt")
    # the run finished its epochs; asking for more makes --resume read the state
    expect(4, ("last.pt",), [cache_home, run_dir], "finetune", "--resume", "--out", str(run_dir))


def test_corrupt_adapter_files(adapter: Path, cache_home: Path, tmp_path: Path) -> None:
    cloud = tmp_path / "c.npy"
    np.save(cloud, np.random.default_rng(0).standard_normal((300, 3)).astype(np.float32))
    roots = [cache_home, adapter]
    weights = adapter / "adapter_model.safetensors"
    good = weights.read_bytes()
    _truncate(weights)
    expect(4, ("adapter_model.safetensors",), roots, "predict", "--adapter", str(adapter),
           str(cloud))  # fmt: skip
    weights.write_bytes(good)
    _truncate(adapter / "memory_bank.h5")
    expect(4, ("memory_bank.h5",), roots, "predict", "--adapter", str(adapter), str(cloud))
    (adapter / "memory_bank.h5").unlink()
    (adapter / "adapter_config.json").write_text("{not json")
    expect(4, ("adapter_config.json",), roots, "evaluate", "--adapter", str(adapter))


def test_corrupt_run_memory_bank(run_dir: Path, cache_home: Path) -> None:
    with h5py.File(run_dir / "memory_bank.h5", "r+") as f:
        f["features"][0, 0] = np.nan
    expect(4, ("memory_bank.h5", "nan"), [cache_home, run_dir], "evaluate", "--run", str(run_dir))
    (run_dir / "memory_bank.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    expect(4, ("memory_bank.h5",), [cache_home, run_dir], "evaluate", "--run", str(run_dir))


# ---- an adapter for another backbone or class count ----------------------------------------


def _edit_config(adapter: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def _predict_args(adapter: Path, tmp_path: Path) -> tuple[str, ...]:
    cloud = tmp_path / "c.npy"
    np.save(cloud, np.random.default_rng(0).standard_normal((300, 3)).astype(np.float32))
    return ("predict", "--adapter", str(adapter), str(cloud))


def test_adapter_for_another_backbone(adapter: Path, cache_home: Path, tmp_path: Path) -> None:
    def other(config: dict) -> None:
        config["backbone"] = config["run_config"]["model"]["backbone"] = "point-bert"

    _edit_config(adapter, other)
    expect(4, ("trainable",), [cache_home, adapter], *_predict_args(adapter, tmp_path))


def test_adapter_for_another_class_count(adapter: Path, cache_home: Path, tmp_path: Path) -> None:
    _edit_config(adapter, lambda c: c.update(class_names=c["class_names"][:5]))
    expect(4, ("shape",), [cache_home, adapter], *_predict_args(adapter, tmp_path))


def test_adapter_for_another_base_checkpoint(
    adapter: Path, cache_home: Path, tmp_path: Path
) -> None:
    _edit_config(adapter, lambda c: c.update(base_sha256="0" * 64))
    expect(4, ("sha256",), [cache_home, adapter], *_predict_args(adapter, tmp_path))


# ---- data files: h5, .dat, .txt; NaN / inf / empty / 1-point clouds; labels -----------------


def _bank(data_dir: Path, task: str, *extra: str) -> tuple[str, ...]:
    return ("build-memory-bank", "--task", task, "--data-dir", str(data_dir), *MINI,
            "--points", "256", *extra)  # fmt: skip


def _scan_file(root: Path) -> Path:
    from pointpeft_cli.data.scanobjectnn import split_file

    folder, name = split_file("scanobjectnn-objbg", "train")
    return root / folder / name


def _scan_tree(root: Path, labels=(0, 3)) -> Path:  # type: ignore[no-untyped-def]
    from pointpeft_cli.data.scanobjectnn import split_file

    for split in ("train", "test"):
        folder, name = split_file("scanobjectnn-objbg", split)
        write_scan_h5(root / folder / name, list(labels), n=300)
    return _scan_file(root)


def _h5_set(path: Path, key: str, index: tuple, value: float) -> None:
    with h5py.File(path, "r+") as f:
        f[key][index] = value


H5_CASES = {
    "truncated": (lambda p: _truncate(p), 4, ("h5",)),
    "not-h5": (lambda p: p.write_bytes(b"garbage" * 100), 4, ("h5",)),
    "nan": (lambda p: _h5_set(p, "data", (0, 5, 1), np.nan), 4, ("nan",)),
    "inf": (lambda p: _h5_set(p, "data", (1, 0, 0), np.inf), 4, ("inf",)),
    "label-out-of-range": (lambda p: _h5_set(p, "label", (1,), 99), 4, ("99",)),
    "negative-label": (lambda p: _h5_set(p, "label", (0,), -1), 4, ("-1",)),
}


@pytest.mark.parametrize("case", list(H5_CASES))
def test_bad_scanobjectnn_h5(case: str, tmp_path: Path, cache_home: Path) -> None:
    damage, code, words = H5_CASES[case]
    path = _scan_tree(tmp_path / "data")
    damage(path)
    error = expect(code, words, [cache_home, tmp_path / "data"],
                   *_bank(tmp_path / "data", "scanobjectnn-objbg"))  # fmt: skip
    assert path.name in error["message"]


def test_bad_modelnet40_h5(tmp_path: Path, cache_home: Path) -> None:
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    write_modelnet_h5(root, {"train": [1, 2], "test": [1, 2]}, n=300)
    _h5_set(root / "ply_data_train0.h5", "label", (0,), 200)
    expect(4, ("ply_data_train0.h5", "200"), [cache_home, root], *_bank(root, "modelnet40"))
    write_modelnet_h5(root, {"train": [1, 2], "test": [1, 2]}, n=300)
    with h5py.File(root / "ply_data_train0.h5", "r+") as f:
        del f["data"]
    expect(4, ("ply_data_train0.h5", "data"), [cache_home, root], *_bank(root, "modelnet40"))


def _text_tree(root: Path) -> Path:
    write_modelnet_text(root, {"airplane": (2, 1), "bathtub": (2, 1)}, n=300)
    return next((root / "airplane").glob("*.txt"))


TEXT_CASES = {
    "not-numbers": (lambda p: p.write_text("1,2,3\nfoo,bar,baz\n"), 4),
    "torn-line": (lambda p: p.write_bytes(p.read_bytes()[:-20]), 4),
    "empty": (lambda p: p.write_bytes(b""), 4),
    "nan": (lambda p: p.write_text("nan,0,0,0,0,1\n" * 300), 4),
    "inf": (lambda p: p.write_text("inf,0,0,0,0,1\n" * 300), 4),
    "one-point": (lambda p: p.write_text("0.1,0.2,0.3,0,0,1\n"), 2),
    "two-columns": (lambda p: p.write_text("0.1,0.2\n" * 300), 4),
}


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_bad_modelnet40_text(case: str, tmp_path: Path, cache_home: Path) -> None:
    damage, code = TEXT_CASES[case]
    root = tmp_path / "modelnet40_normal_resampled"
    bad = _text_tree(root)
    damage(bad)
    error = expect(code, (), [cache_home, root], *_bank(root, "modelnet40"))
    assert bad.name in error["message"]


def test_bad_dat_pickles(tmp_path: Path, cache_home: Path) -> None:
    root = tmp_path / "modelnet40"
    root.mkdir()
    from pointpeft_cli.tasks import MODELNET40_CLASSES

    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    for split in ("train", "test"):
        (root / f"modelnet40_{split}.txt").write_text("")
        pts = [np.zeros((300, 6), np.float32)]
        with (root / f"modelnet40_{split}_8192pts_fps.dat").open("wb") as f:
            pickle.dump([pts, [np.array([0])]], f)
    dat = root / "modelnet40_train_8192pts_fps.dat"
    roots = [cache_home, root]
    trust = ("--set", "data.trust_pickle=true")
    expect(4, (dat.name, "pickle"), roots, *_bank(root, "modelnet40"))  # not trusted
    _truncate(dat)
    expect(4, (dat.name,), roots, *_bank(root, "modelnet40", *trust))
    with dat.open("wb") as f:
        pickle.dump({"not": "a list"}, f)
    expect(4, (dat.name,), roots, *_bank(root, "modelnet40", *trust))
    with dat.open("wb") as f:
        pickle.dump([[np.zeros((300, 6), np.float32)], [np.array([77])]], f)
    expect(4, (dat.name, "77"), roots, *_bank(root, "modelnet40", *trust))


CLOUDS = {
    "nan.npy": (np.array([[np.nan, 0, 0]] * 400, np.float32), 4, "nan"),
    "inf.npy": (np.array([[0, np.inf, 0]] * 400, np.float32), 4, "inf"),
    "empty.npy": (np.zeros((0, 3), np.float32), 4, "empty"),
    "one.npy": (np.zeros((1, 3), np.float32), 2, "1 points"),
    "flat.npy": (np.zeros((400, 2), np.float32), 4, "shape"),
    "strings.npy": (np.array([["a", "b", "c"]] * 400), 4, "dtype"),
}


@pytest.mark.parametrize("name", list(CLOUDS))
def test_bad_clouds_for_predict(name: str, adapter: Path, cache_home: Path, tmp_path: Path) -> None:
    array, code, word = CLOUDS[name]
    cloud = tmp_path / "in" / name
    cloud.parent.mkdir()
    np.save(cloud, array)
    error = expect(code, (word,), [cache_home, adapter, cloud.parent], "predict", "--adapter",
                   str(adapter), str(cloud))  # fmt: skip
    assert name in error["message"]


def test_bad_cloud_in_a_folder_task(tmp_path: Path, cache_home: Path) -> None:
    data = tmp_path / "clouds"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (data / split / cls).mkdir(parents=True)
            np.save(data / split / cls / "x.npy", rng.standard_normal((300, 3)).astype("f4"))
    bad = data / "train" / "b" / "bad.xyz"
    bad.write_text("0 0 nan\n" * 300)
    out = tmp_path / "run"
    expect(
        4,
        ("bad.xyz", "nan"),
        [cache_home, data, out],
        "finetune",
        "--task",
        "folder",
        "--data-dir",
        str(data),
        *MINI,
        "--points",
        "256",
        "--epochs",
        "1",
        "--out",
        str(out),
    )
    assert not out.exists()
    bad.write_text("0 0 0\n")
    expect(2, ("bad.xyz",), [cache_home, data], *_bank(data, "folder"))


# ---- config: unknown preset keys and bad values ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--set", "train.lrr=0.1"), ("train.lrr",)),
        (("--set", "nosection.x=1"), ("nosection",)),
        (("--set", "train.epochs=abc"), ("train.epochs",)),
        (("--set", "train.nan_policy=maybe"), ("nan_policy",)),
        (("--set", "train.method=magic"), ("method",)),
        (("--set", "novalue"), ("novalue",)),
        (("--preset", "no_such_preset"), ("no_such_preset",)),
        (("--batch-size", "0"), ("batch_size",)),
        (("--lr", "-1"), ("lr",)),
        (("--points", "0"), ("points",)),
        (("--task", "mnist"), ("mnist",)),
        (("--backbone", "resnet"), ("resnet",)),
    ],
)
def test_bad_config(args: tuple[str, ...], words: tuple[str, ...], tmp_path: Path,
                    cache_home: Path) -> None:  # fmt: skip
    out = tmp_path / "run"
    expect(2, words, [cache_home, out], "finetune", *TINY, "--out", str(out), *args)


def test_bad_flags_for_a_resumed_run(run_dir: Path, cache_home: Path) -> None:
    expect(2, ("--resume",), [cache_home, run_dir], "finetune", "--resume", "--out", str(run_dir),
           "--epochs", "9")  # fmt: skip
    expect(2, ("not empty",), [cache_home, run_dir], "finetune", *TINY, "--out", str(run_dir))


def test_bank_only_flags(cache_home: Path, tmp_path: Path) -> None:
    expect(2, ("train.lrr",), [cache_home], "build-memory-bank", *TINY_BANK, "--set",
           "train.lrr=1")  # fmt: skip
