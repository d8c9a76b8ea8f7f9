"""Accuracy of point-peft vs full vs linear on `shapes`, and the same backbone with random weights.

One run of the default fine-tuning preset (`point_mae_mini_shapes`: the shipped point-mae-mini,
960 training / 600 test clouds, 6 epochs, last-epoch test accuracy) per row, all with the same
seed, data, schedule and evaluation:

* point-peft, full, linear: the shipped pre-trained point-mae-mini;
* point-peft (random init): the same model and method on randomly initialised weights
  (`model.pretrained=false`), to show what pre-training contributes;
* point-peft (query cache): the optional approximation `peft.query_cache` (each training
  sample's retrieval query computed once and reused), to show what it costs in accuracy.

`--rows` picks rows by name; `--seeds 0,1` runs every row once per seed and adds the mean.

Each row is a `pointpeft finetune --json` subprocess; `--parallel` of them run at once, each with
`--threads` CPU threads (OMP_NUM_THREADS). Per row: test accuracy, mean class accuracy,
trainable parameters (and share of the total), seconds per training epoch (wall), the whole
run's wall and CPU seconds (bank, training and evaluation), from `os.wait4`'s rusage.

    python bench/accuracy.py [--parallel 2] [--threads 1] [--set key=value ...]
        [--rows "point-peft,point-peft (query cache)"] [--seeds 0] [--checkpoint FILE]
        [--runs-dir DIR]

Writes `bench/out/accuracy.json` and `bench/out/accuracy.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import load_average, machine_info, write_outputs

ROWS: list[tuple[str, str, list[str]]] = [
    ("point-peft", "point-peft", []),
    ("full", "full", []),
    ("linear", "linear", []),
    ("point-peft (random init)", "point-peft", ["model.pretrained=false"]),
    ("point-peft (query cache)", "point-peft", ["peft.query_cache=true"]),
]


def planned(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """The (name, method, sets) runs: the chosen rows, once per seed."""
    wanted = [r.strip() for r in args.rows.split(",")] if args.rows else [r[0] for r in ROWS]
    unknown = sorted(set(wanted) - {r[0] for r in ROWS})
    if unknown:
        raise SystemExit(f"unknown row(s) {unknown}; choose from {[r[0] for r in ROWS]}")
    seeds = [int(s) for s in args.seeds.split(",")]
    return [
        (name if len(seeds) == 1 else f"{name} seed {seed}", method, [*sets, f"train.seed={seed}"])
        for name, method, sets in ROWS
        if name in wanted
        for seed in seeds
    ]


def _command(method: str, sets: list[str], out: Path, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "pointpeft_cli", "finetune", "--method", method,
           "--out", str(out), "--json", "--device", "cpu"]  # fmt: skip
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    extra = list(sets) + list(args.set or [])
    if args.checkpoint and "model.pretrained=false" not in sets:
        extra.append(f"model.checkpoint={args.checkpoint}")
    for item in extra:
        cmd += ["--set", item]
    return cmd


def _start(name: str, cmd: list[str], log: Path, threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    fh = log.open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=fh, env=env, text=True)
    return {"name": name, "proc": proc, "log": fh, "start": time.time(), "cmd": cmd}


def _reap(running: list[dict[str, Any]]) -> dict[str, Any]:
    """Wait for whichever run ends first (so its wall time is its own)."""
    pid, status, usage = os.wait4(-1, 0)
    job = next(j for j in running if j["proc"].pid == pid)
    running.remove(job)
    job.update(status=status, usage=usage, wall=time.time() - job["start"])
    return job


def _finish(job: dict[str, Any]) -> dict[str, Any]:
    proc, usage, wall = job["proc"], job["usage"], job["wall"]
    stdout = proc.stdout.read() if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(job["status"])
    job["log"].close()
    if proc.returncode != 0:
        raise SystemExit(f"{job['name']} failed (exit {proc.returncode}); see {job['log'].name}")
    obj = json.loads(stdout)
    run_dir = Path(obj["run_dir"])
    history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epoch_s = [r["train_seconds"] for r in history]
    last = obj["last"] or {}
    return {
        "name": job["name"],
        "method": obj["method"],
        "accuracy": last.get("accuracy"),
        "mean_class_accuracy": last.get("mean_class_accuracy"),
        "best": obj["best"],
        "trainable_params": obj["trainable_params"],
        "trainable_params_without_head": obj["trainable_params_without_head"],
        "total_params": obj["total_params"],
        "trainable_share": obj["trainable_params"] / obj["total_params"],
        "seconds_per_epoch": sum(epoch_s) / len(epoch_s),
        "epochs": obj["epochs"],
        "run_wall_seconds": wall,
        "engine_seconds": json.loads((run_dir / "run.json").read_text())["seconds"],
        "run_cpu_seconds": usage.ru_utime + usage.ru_stime,
        "backbone_source": json.loads((run_dir / "run.json").read_text())["backbone"]["source"],
        "run_dir": str(run_dir),
        "command": " ".join(job["cmd"][1:]),
    }


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run every row, `args.parallel` at a time; results in ROWS order."""
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="pointpeft-accuracy-"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    plan = planned(args)
    pending = list(plan)
    running: list[dict[str, Any]] = []
    done: dict[str, dict[str, Any]] = {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name, method, sets = pending.pop(0)
            slug = name.replace(" ", "-").replace("(", "").replace(")", "")
            cmd = _command(method, sets, runs_dir / slug, args)
            running.append(_start(name, cmd, runs_dir / f"{slug}.log", args.threads))
            print(f"started {name}", file=sys.stderr, flush=True)
        job = _reap(running)
        done[job["name"]] = _finish(job)
        row = done[job["name"]]
        print(f"finished {row['name']}: {row['accuracy']:.2%} in {row['run_wall_seconds']:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
    return [done[name] for name, _, _ in plan]


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results table (README / BENCHMARKS.md)."""
    lines = [
        "| method | test accuracy | mean class acc. | trainable params | share | s / epoch | "
        "run wall s | run CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['accuracy']:.2%} | {r['mean_class_accuracy']:.2%} | "
            f"{r['trainable_params']:,} | {r['trainable_share']:.2%} | "
            f"{r['seconds_per_epoch']:.1f} | {r['run_wall_seconds']:.0f} | "
            f"{r['run_cpu_seconds']:.0f} |"
        )
    seeds = meta["seeds"]
    if len(seeds) > 1:
        lines += ["", "| row | mean test accuracy over seeds | per seed |", "|---|---|---|"]
        for name, _, _ in ROWS:
            mine = [r for r in rows if r["name"].startswith(f"{name} seed ")]
            if mine:
                accs = [r["accuracy"] for r in mine]
                per = ", ".join(f"{a:.2%}" for a in accs)
                lines.append(f"| {name} | {sum(accs) / len(accs):.2%} | {per} |")
    m = meta["machine"]
    lines += [
        "",
        f"point-mae-mini on `shapes` (preset point_mae_mini_shapes, {rows[0]['epochs']} epochs, "
        f"last-epoch test accuracy, seed(s) {', '.join(map(str, seeds))}), one run per row. "
        f"{m['cpu']}, {meta['parallel']} run(s) at a time with {meta['threads']} thread(s) each; "
        f"load average before/after: {meta['load_before']} / {meta['load_after']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", help="extra finetune --set (every row)")
    parser.add_argument("--rows", help="comma-separated row names (default: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--checkpoint", help="backbone file instead of the shipped weights")
    parser.add_argument("--runs-dir", help="where the run directories go (default: a temp dir)")
    parser.add_argument("--cache-dir", help="pointpeft cache root for the runs")
    parser.add_argument("--stem", default="accuracy", help="output file stem in bench/out/")
    args = parser.parse_args()
    load_before = load_average()
    started = time.time()
    rows = run_all(args)
    meta = {
        "machine": machine_info(args.threads),
        "parallel": args.parallel,
        "threads": args.threads,
        "extra_sets": args.set or [],
        "seeds": [int(x) for x in args.seeds.split(",")],
        "checkpoint": args.checkpoint,
        "load_before": load_before,
        "load_after": load_average(),
        "wall_seconds": time.time() - started,
    }
    md = markdown(rows, meta)
    js, mdp = write_outputs(args.stem, {"rows": rows, **meta}, md)
    print(md)
    print(f"wrote {js} and {mdp}", file=sys.stderr)


if __name__ == "__main__":
    main()
