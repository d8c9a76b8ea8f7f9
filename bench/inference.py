"""Inference cost: evaluate throughput at batch 64, and the memory-bank build rate.

Paper-size Point-MAE (random weights) at the ScanObjectNN and ModelNet40 configs (see
`bench/train_step.py`). Evaluate = `model.eval()` forward under `torch.inference_mode()`, as
`pointpeft evaluate` runs it (Point-PEFT includes its retrieval pass). Bank build = the frozen
retrieval feature of each cloud (`retrieval_features`), as `pointpeft build-memory-bank` runs
it. Each (config, method, what) runs in its own process; reported: the median over the timed
batches, samples/s, and the peak RSS (warm-up batch included) above the RSS just before the
first batch, with numba's kernels already loaded (a start-up cost, as in `bench/train_step.py`).

    python bench/inference.py [--batches 3] [--configs scan,modelnet]
        [--methods point-peft,full,linear] [--threads 2]

Writes `bench/out/inference.json` and `bench/out/inference.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from common import (
    CONFIGS,
    load_average,
    machine_info,
    peak_rss_mib,
    process_setup,
    random_clouds,
    reset_peak_rss,
    rss_mib,
    run_worker,
    selected,
    write_outputs,
)
from train_step import METHODS, build

from pointpeft_cli.peft import kernels

BATCH = 64


def _timed(fn, inputs: list[torch.Tensor]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Median seconds per batch after one warm-up, and the peak RSS delta over all batches.

    The baseline is taken before the warm-up batch: what the first batch allocates is part of
    the cost (measured after it, the delta was only growth beyond the warm-up's own heap).
    """
    with torch.inference_mode():
        before = rss_mib()
        reset_peak_rss()
        fn(inputs[0])
        times = []
        for x in inputs[1:]:
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    peak = peak_rss_mib()
    step = statistics.median(times)
    return {
        "batch_s": step,
        "samples_per_s": BATCH / step,
        "peak_delta_mib": None if before is None or peak is None else peak - before,
    }


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure `args.what` (evaluate, or Point-PEFT's bank build) of one (config, method)."""
    process_setup(args.threads)
    kernels.warm_up()
    spec = CONFIGS[args.config]
    model = build(args.config, args.method, "cpu").eval()
    gen = torch.Generator().manual_seed(7)
    inputs = [random_clouds(BATCH, spec["points"], gen) for _ in range(args.batches + 1)]
    fn = model if args.what == "evaluate" else model.retrieval_features
    return {
        "config": args.config,
        "method": args.method,
        args.what: _timed(fn, inputs),
        "load_after": load_average(),
    }


def markdown(payload: dict[str, Any]) -> str:
    """The result table."""
    m = payload["machine"]
    lines = [
        "# Inference: evaluate at batch 64, memory-bank build (Point-MAE)",
        "",
        f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}, {m['date']}; "
        f"median of {payload['batches']} batches after one warm-up; "
        f"load average seen {payload['load_min']}-{payload['load_max']}.",
        "",
        "| config | method | what | s / batch of 64 | samples/s | peak mem MiB |",
        "|---|---|---|---|---|---|",
    ]
    for run in payload["runs"]:
        for what in ("evaluate", "bank_build"):
            if what not in run:
                continue
            r = run[what]
            lines.append(
                f"| {CONFIGS[run['config']]['label']} | {run['method']} | {what} "
                f"| {r['batch_s']:.3f} | {r['samples_per_s']:.1f} | {r['peak_delta_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3, help="timed batches per measurement")
    parser.add_argument("--configs", default="scan,modelnet")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--what", default="evaluate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batches < 1:
        parser.error("--batches must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    configs, methods = selected(args.configs, args.methods, CONFIGS, METHODS)
    loads, runs = [load_average()], []
    for config in configs:
        for method in methods:
            run: dict[str, Any] = {"config": config, "method": method}
            whats = ("evaluate", "bank_build") if method == "point-peft" else ("evaluate",)
            for what in whats:
                part = run_worker(
                    Path(__file__),
                    ["--config", config, "--method", method, "--what", what,
                     "--batches", str(args.batches), "--threads", str(args.threads)],
                )  # fmt: skip
                run[what] = part[what]
                loads.append(part["load_after"])
                print(
                    f"{config:8s} {method:10s} {what:10s} {part[what]['samples_per_s']:.1f} "
                    f"samples/s  load {part['load_after']}",
                    flush=True,
                )
            runs.append(run)
    one_min = [la[0] for la in loads if la]
    payload = {
        "machine": machine_info(args.threads),
        "batch": BATCH,
        "batches": args.batches,
        "load_min": min(one_min, default=None),
        "load_max": max(one_min, default=None),
        "runs": runs,
    }
    md = markdown(payload)
    paths = write_outputs("inference", payload, md)
    print(md)
    print("wrote", *paths)


if __name__ == "__main__":
    main()
