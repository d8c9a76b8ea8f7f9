"""The command chain on the procedural task: bank -> finetune -> export -> evaluate -> predict,
bit-exact resume, the three methods on one preset, and the adapter size at paper scale."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from pointpeft_cli.engine import train as train_mod
from pointpeft_cli.engine.memory_bank import load_bank, save_bank
from tests.cli_helpers import run_cli

# a random-init point-mae-mini (its shipped weights are not needed to test the plumbing)
QUICK = [
    "--task", "shapes", "--backbone", "point-mae-mini", "--set", "model.pretrained=false",
    "--set", "data.shapes_train_size=48", "--set", "data.shapes_test_size=24",
    "--batch-size", "8", "--seed", "3",
]  # fmt: skip


def _finetune(out: Path, *extra: str) -> dict:
    res = run_cli("finetune", *QUICK, "--out", str(out), "--json", *extra)
    assert res.exit_code == 0, res.stderr
    return res.json()


def test_chain(tmp_path: Path, cache_home: Path) -> None:
    bank_args = [*QUICK[:10], "--seed", "3"]
    bank = run_cli("build-memory-bank", *bank_args, "--json")
    assert bank.exit_code == 0, bank.stderr
    b = bank.json()
    assert b["command"] == "build-memory-bank" and b["cached"] is False
    assert (b["num_samples"], b["feature_dim"]) == (48, 192)
    assert Path(b["path"]).is_file() and b["seconds"] >= 0
    again = run_cli("build-memory-bank", *bank_args, "--json").json()
    assert again["cached"] is True and again["path"] == b["path"]

    run_dir = tmp_path / "run"
    ft = _finetune(run_dir, "--epochs", "2")
    for key in ("run_dir", "method", "backbone", "task", "epochs", "best", "last",
                "trainable_params", "trainable_params_without_head", "total_params", "seconds",
                "train_samples_per_second"):  # fmt: skip
        assert key in ft, key
    assert ft["epochs"] == 2 and ft["method"] == "point-peft"
    assert set(ft["best"]) == {"epoch", "accuracy", "mean_class_accuracy"}
    assert 0.0 <= ft["best"]["accuracy"] <= 1.0
    assert ft["trainable_params_without_head"] < ft["trainable_params"] < ft["total_params"]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    for name in ("config.yaml", "run.json", "memory_bank.h5", "checkpoints/last.pt",
                 "checkpoints/best.safetensors", "checkpoints/last.safetensors"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete"
    for key in ("train_augment", "points", "votes", "seed", "selection"):
        assert key in info["protocol"]
    assert info["memory_bank"]["cached_path"] == b["path"]  # the bank was reused, not rebuilt

    ev = run_cli("evaluate", "--run", str(run_dir), "--checkpoint", "last", "--json").json()
    assert ev["accuracy"] == pytest.approx(ft["last"]["accuracy"])
    assert ev["num_samples"] == 24 and len(ev["confusion_matrix"]) == 12
    assert sum(map(sum, ev["confusion_matrix"])) == 24

    adapter = tmp_path / "adapter"
    ex = run_cli("export-adapter", "--run", str(run_dir), "--checkpoint", "last",
                 "--out", str(adapter), "--json").json()  # fmt: skip
    names = {f["name"] for f in ex["files"]}
    assert names == {"adapter_config.json", "adapter_model.safetensors", "memory_bank.h5"}
    config = json.loads((adapter / "adapter_config.json").read_text())
    for key in ("pointpeft_version", "method", "backbone", "base_sha256", "task", "class_names"):
        assert key in config
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert sum(t.numel() for t in saved.values()) <= ft["trainable_params"] + 10_000  # + BN stats

    # a fresh process reproduces the run's accuracy from the adapter alone
    env = {**os.environ, "POINTPEFT_HOME": str(cache_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "pointpeft_cli", "evaluate", "--adapter", str(adapter), "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == ft["last"]["accuracy"]

    cloud = tmp_path / "cloud.npy"
    np.save(cloud, np.random.default_rng(0).standard_normal((1500, 3)).astype(np.float32))
    pr = run_cli("predict", "--adapter", str(adapter), str(cloud), "--json").json()
    (pred,) = pr["predictions"]
    assert pred["file"] == str(cloud) and pred["label"] in config["class_names"]
    assert len(pred["top5"]) == 5 and pred["top5"][0] == [pred["label"], pred["score"]]
    assert all(a[1] >= b[1] for a, b in zip(pred["top5"], pred["top5"][1:], strict=False))


def test_methods_share_one_preset(tmp_path: Path) -> None:
    counts = {}
    for method in ("point-peft", "full", "linear"):
        res = _finetune(tmp_path / method, "--method", method, "--epochs", "1")
        counts[method] = res["trainable_params"]
        assert res["method"] == method and res["total_params"] > 0
    assert counts["linear"] < counts["point-peft"] < counts["full"]


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    """Makes the training loop raise KeyboardInterrupt at its `steps`-th batch."""
    real = train_mod._step_inputs
    seen = {"n": 0}

    def step(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen["n"] += 1
        if seen["n"] == steps:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_step_inputs", step)


@pytest.mark.parametrize("extra", [[], ["--query-cache"]], ids=["exact", "query-cache"])
def test_resume_is_bit_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    full = _finetune(tmp_path / "full", "--epochs", "3", *extra)
    with monkeypatch.context() as patched:  # (undo() would also drop the isolated home)
        _interrupt_after(patched, 9)  # 6 steps per epoch: stops inside epoch 2
        cut = ["--epochs", "3", "--out", str(tmp_path / "cut"), "--json", *extra]
        res = run_cli("finetune", *QUICK, *cut)
    assert res.exit_code == 130
    assert res.json()["error"]["type"] == "RunInterrupted"
    info = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert info["status"] == "interrupted" and info["epochs_completed"] == 1
    # the cache's bank changes meanwhile (rebuilt by another version, say): the resumed run
    # keeps the bank it trained with, its own copy
    cached = Path(info["memory_bank"]["cached_path"])
    assert cached.is_relative_to(os.environ["POINTPEFT_HOME"])
    bank = load_bank(cached)
    save_bank(cached, replace(bank, features=bank.features * np.float32(1 + 2**-20)))
    resumed = run_cli("finetune", "--resume", "--out", str(tmp_path / "cut"), "--json")
    assert resumed.exit_code == 0, resumed.stderr
    a = load_file(str(tmp_path / "full" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a), "resumed run diverged from the uninterrupted one"
    assert resumed.json()["last"] == full["last"]
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert info["protocol"]["retrieval_query_cache"] is bool(extra)


def test_resume_needs_a_run(tmp_path: Path) -> None:
    res = run_cli("finetune", "--resume", "--out", str(tmp_path / "none"), "--json")
    assert res.exit_code == 2
    res = run_cli("finetune", "--resume", "--json")
    assert res.exit_code == 2
    assert "--out" in res.json()["error"]["message"]


def test_print_config_and_bad_keys() -> None:
    res = run_cli("finetune", "--print-config", "--set", "train.lr=0.01", "--epochs", "4")
    assert res.exit_code == 0
    assert "lr: 0.01" in res.stdout and "epochs: 4" in res.stdout
    bad = run_cli("finetune", "--set", "train.lrr=1", "--json")
    assert bad.exit_code == 2
    assert "train.lr" in bad.json()["error"]["hint"]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path, cache_home: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "POINTPEFT_HOME": str(cache_home), "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free loopback port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "pointpeft_cli",
        "finetune", *QUICK, "--epochs", "1", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    # own process group, so a timeout also ends the workers torchrun started
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    assert stderr.count("run directory:") == 1  # only rank 0 reports
    (line,) = (out / "metrics.jsonl").read_text().splitlines()
    record = json.loads(line)
    single = _finetune(tmp_path / "single", "--epochs", "1")
    single_record = json.loads((Path(single["run_dir"]) / "metrics.jsonl").read_text())
    assert set(record) == set(single_record)
    assert json.loads((out / "run.json").read_text())["world_size"] == 2


def test_point_mae_adapter_is_small(tmp_path: Path) -> None:
    """Paper-size Point-MAE with an official-layout checkpoint: the exported adapter, memory bank
    excluded, stays under 4 MB (ModelNet40 has 40 classes; shapes has 12, so add the head rows)."""
    from tests.ckpt_factory import write_official_checkpoint

    ckpt = write_official_checkpoint(tmp_path / "pretrain.pth", "mae_pretrain", seed=1)
    run_dir = tmp_path / "mae"
    res = run_cli(
        "finetune", "--task", "shapes", "--backbone", "point-mae",
        "--set", f"model.checkpoint={ckpt}", "--set", "data.shapes_train_size=16",
        "--set", "data.shapes_test_size=12", "--batch-size", "8", "--epochs", "1",
        "--out", str(run_dir), "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["backbone"]["source"] == str(ckpt)
    assert 600_000 < res.json()["trainable_params"] < 900_000
    ex = run_cli("export-adapter", "--run", str(run_dir), "--out", str(tmp_path / "ad"), "--json")
    sizes = {f["name"]: f["bytes"] for f in ex.json()["files"]}
    extra_head_rows = (40 - 12) * (256 + 1) * 4  # the 40-class head's extra float32 weights
    assert sizes["adapter_model.safetensors"] + extra_head_rows < 4 * 1024 * 1024
    # the adapter refuses a different backbone file (exit 4) unless forced
    other = write_official_checkpoint(tmp_path / "other.pth", "mae_pretrain", seed=2)
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    cfg["run_config"]["model"]["checkpoint"] = str(other)
    (tmp_path / "ad" / "adapter_config.json").write_text(json.dumps(cfg))
    bad = run_cli("evaluate", "--adapter", str(tmp_path / "ad"), "--json")
    assert bad.exit_code == 4 and "sha256" in bad.json()["error"]["message"]
    forced = run_cli("evaluate", "--adapter", str(tmp_path / "ad"), "--force", "--json")
    assert forced.exit_code == 0


def test_recompute_mlp_setting_reaches_the_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pointpeft_cli.models.registry import default_config
    from pointpeft_cli.models.transformer import Block

    calls = {"hidden": 0}
    real = Block._norm2_hidden

    def counted(self, x):  # type: ignore[no-untyped-def]
        calls["hidden"] += 1
        return real(self, x)

    monkeypatch.setattr(Block, "_norm2_hidden", counted)
    plain = _finetune(tmp_path / "plain", "--epochs", "1")
    assert calls["hidden"] == 0
    again = _finetune(tmp_path / "rc", "--epochs", "1", "--set", "train.recompute_mlp=true")
    # 6 steps (48 clouds, batch 8) x point-mae-mini's blocks, each run forward and in backward
    depth = default_config("point-mae-mini").depth
    assert calls["hidden"] == 6 * depth * 2
    assert again["last"] == plain["last"]
    a = load_file(str(tmp_path / "plain" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "rc" / "checkpoints" / "last.safetensors"))
    assert all(a[k].equal(b[k]) for k in a), "recomputation must not change the numbers"
