"""Where one training step's time goes: `torch.profiler` over a warm step, by phase and by op.

Same model, data and step as `bench/train_step.py` (paper-size Point-MAE, batch 32). Prints the
wall time of the phases (frozen embedding, retrieval pass, rest of the forward, backward,
optimizer) measured without the profiler, then the profiler's op table of one more step.

    python bench/profile_step.py --config scan --method point-peft [--rows 30] [--shapes]
        [--memory]   (with MALLOC_MMAP_THRESHOLD_=131072 for live memory)

Writes `bench/out/profile_<config>_<method>.json` (phases) and `.md` (phases and op table).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from common import (
    CONFIGS,
    machine_info,
    peak_rss_mib,
    process_setup,
    random_clouds,
    reset_peak_rss,
    rss_mib,
    write_outputs,
)
from train_step import BATCH, STEP_METHODS, Stepper, build


def phase_times(model: Any, stepper: Stepper, batch: tuple[torch.Tensor, torch.Tensor], steps: int):
    """Median seconds per phase over `steps` steps (after one warm-up step)."""
    points, labels = batch
    times: dict[str, list[float]] = {}

    def timed(name: str, fn, *args):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = fn(*args)
        times.setdefault(name, []).append(time.perf_counter() - start)
        return out

    def optimizer_step() -> None:
        torch.nn.utils.clip_grad_norm_(stepper.params, 10.0)
        stepper.opt.step()

    for i in range(steps + 1):
        # the work the forward starts with, timed on its own (skipped when the query is cached)
        if model.method == "point-peft" and model.query_cache is None:
            with torch.no_grad():
                emb = timed("embed", model.embed, points, model.num_group, model.group_size, True)
                timed("retrieval pass", model.retrieval_query, points, emb)
        loss = timed("forward (whole)", stepper.forward, points, labels)
        stepper.opt.zero_grad(set_to_none=False)
        timed("backward", loss.backward)
        timed("clip + AdamW", optimizer_step)
        if i == 0:
            times.clear()
    return {name: statistics.median(vals) for name, vals in times.items()}


def memory_phases(stepper: Stepper, batch: tuple[torch.Tensor, torch.Tensor], steps: int):
    """Per step, RSS (MiB) above the RSS before the first step: at the end of forward, the peak
    during forward, the peak during backward. Run with `MALLOC_MMAP_THRESHOLD_=131072` so that
    RSS follows live tensors (freed ones go back to the OS)."""
    points, labels = batch
    start = rss_mib()
    rows = []
    for _ in range(steps):
        reset_peak_rss()
        loss = stepper.forward(points, labels)
        end, fwd_peak = rss_mib(), peak_rss_mib()
        reset_peak_rss()
        stepper.opt.zero_grad(set_to_none=False)
        loss.backward()
        bwd_peak = peak_rss_mib()
        del loss
        torch.nn.utils.clip_grad_norm_(stepper.params, 10.0)
        stepper.opt.step()
        if None in (start, end, fwd_peak, bwd_peak):
            return []
        after = rss_mib() or start
        rows.append({"forward_end": end - start, "forward_peak": fwd_peak - start,
                     "backward_peak": bwd_peak - start, "after_step": after - start})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="scan")
    parser.add_argument("--method", choices=STEP_METHODS, default="point-peft")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps for the phase medians")
    parser.add_argument("--rows", type=int, default=30, help="rows of the op table")
    parser.add_argument("--shapes", action="store_true", help="group the op table by input shape")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also report where the memory peak falls (forward end / forward / backward); run "
        "with MALLOC_MMAP_THRESHOLD_=131072 so RSS follows live tensors",
    )
    args = parser.parse_args()
    malloc = process_setup(args.threads)
    spec = CONFIGS[args.config]
    model = build(args.config, args.method, "cpu")
    gen = torch.Generator().manual_seed(123)
    points = random_clouds(BATCH, spec["points"], gen)
    labels = torch.randint(spec["classes"], (BATCH,), generator=gen)
    stepper = Stepper(model)
    memory = memory_phases(stepper, (points, labels), args.steps) if args.memory else []
    phases = phase_times(model, stepper, (points, labels), args.steps)

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        stepper.step(points, labels)
    table = prof.key_averages(group_by_input_shape=args.shapes).table(
        sort_by="self_cpu_time_total", row_limit=args.rows
    )
    lines = [
        f"# Profile: {spec['label']}, {args.method}, batch {BATCH}, {args.threads} threads, "
        f"malloc: {malloc}",
        "",
        "| phase | median s |",
        "|---|---|",
        *[f"| {name} | {sec:.3f} |" for name, sec in phases.items()],
        "",
    ]
    if memory:
        lines += [
            "| step | MiB at forward end | forward peak | backward peak | after the step |",
            "|---|---|---|---|---|",
            *[f"| {i + 1} | {r['forward_end']:.0f} | {r['forward_peak']:.0f} "
              f"| {r['backward_peak']:.0f} | {r['after_step']:.0f} |"
              for i, r in enumerate(memory)],
            "",
        ]  # fmt: skip
    lines += [
        "```",
        table,
        "```",
    ]
    md = "\n".join(lines) + "\n"
    payload = {"machine": machine_info(args.threads), "config": args.config, "method": args.method,
               "phases_s": phases, "memory_mib": memory}  # fmt: skip
    paths = write_outputs(f"profile_{args.config}_{args.method}", payload, md)
    print(md)
    print("wrote", *paths)


if __name__ == "__main__":
    main()
