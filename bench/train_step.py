"""Training-step cost of Point-PEFT vs full fine-tuning vs linear probing at paper size.

Paper-size Point-MAE (random weights; cost does not depend on values) at the ScanObjectNN
config (2048 points, 128 x 32 groups, 15 classes, bank 2309 rows) and the ModelNet40 config
(1024 points, 64 x 32 groups, 40 classes, bank 9843 rows), batch 32. One step = forward,
cross-entropy, backward, gradient clipping (10) and AdamW over the trainable parameters, as
`pointpeft finetune` runs it; sampling and augmentation stay outside the step.

Each (config, method) runs in its own process, methods alternate within a round and the order
flips every round, so machine load hits all methods alike. Then, per config, one more process
builds every method and times them interleaved (one step each in turn, order flipped every
cycle, `--interleaved` cycles): a shared VM's speed drifts over tens of seconds, and the ratio
of two steps run back to back is far steadier than the ratio of two processes' medians. Per
process: the median step time over the warm steps, and the peak RSS above the RSS just before
the first step (CPU) or `torch.cuda.max_memory_allocated` (GPU). FLOPs come from one extra
step under `torch.utils.flop_counter.FlopCounterMode` (matmul-type ops only). Every time ratio
comes with a 90 % percentile-bootstrap interval (`common.ratio_interval`): over the pooled warm
steps of the per-process runs, and over the cycles of the interleaved one; the per-process ratio
is also shown round by round. On a shared VM these intervals are a few hundredths wide, so a
ratio is only "under" a target when its interval is. Variants:
`point-peft-rc` recomputes the MLP hidden activations (`train.recompute_mlp`, same numbers);
`point-peft-qc` uses the optional query cache (an approximation), warm: no retrieval pass.
Workers set up malloc as the CLI's training commands do (`pointpeft_cli.engine.allocator`:
glibc reuses freed activations instead of page-faulting them in every step); `--malloc default`
measures glibc's defaults instead.

    python bench/train_step.py [--rounds 3] [--steps 6] [--configs scan,modelnet]
        [--methods point-peft,full,linear,point-peft-rc,point-peft-qc] [--threads 2]
        [--device cpu] [--malloc tuned|default]

Writes `bench/out/train_step.json` and `bench/out/train_step.md` (stem set by `--out`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import (
    CONFIGS,
    load_average,
    machine_info,
    matmul_peaks,
    median,
    peak_rss_mib,
    process_setup,
    random_bank,
    random_clouds,
    ratio_interval,
    reset_peak_rss,
    rss_mib,
    run_worker,
    selected,
    write_outputs,
)

BATCH = 32
METHODS = ("point-peft", "full", "linear")
#: Point-PEFT variants: `-rc` recomputes every block's MLP hidden activation in backward
#: (`train.recompute_mlp`, same numbers); `-qc` is the optional query cache (`peft.query_cache`,
#: an approximation) measured warm: every sample's query is cached, no retrieval pass.
RECOMPUTE, CACHED = "point-peft-rc", "point-peft-qc"
VARIANTS = {
    RECOMPUTE: "train.recompute_mlp (exact method, less memory)",
    CACHED: "peft.query_cache (approximation, not the exact method)",
}
STEP_METHODS = (*METHODS, *VARIANTS)
ANCHORS = {  # original code, same protocol and machine type (original-baseline.md)
    "scan": {"released": 24.2, "no_grad": 18.8, "full": 7.54},
    "modelnet": {"released": 9.45, "no_grad": 5.66, "full": 3.45},
}


def build(config: str, method: str, device: str, seed: int = 0) -> torch.nn.Module:
    """The paper-size Point-MAE classifier for `config`, bank attached for Point-PEFT."""
    from pointpeft_cli.models.registry import create_model
    from pointpeft_cli.peft.config import PointPeftConfig

    spec = CONFIGS[config]
    torch.manual_seed(seed)
    model = create_model(
        "point-mae",
        num_classes=spec["classes"],
        method="point-peft" if method in VARIANTS else method,
        num_group=spec["groups"],
        group_size=32,
        peft=PointPeftConfig(query_cache=method == CACHED),
    )
    model.set_recompute_mlp(method == RECOMPUTE)
    if model.method == "point-peft":
        gen = torch.Generator().manual_seed(seed + 1)
        model.set_memory_bank(random_bank(spec["bank"], model.cfg.trans_dim, gen))
    return model.to(device).train()


class Stepper:
    """One training step exactly as the engine runs it (no AMP, clip 10, AdamW 5e-4 / 0.05).

    `keep_grads=False` frees the gradients before every backward instead of keeping one buffer
    per parameter from the first forward on (what the engine did before it kept them; same
    numbers, for measuring what keeping them does to memory and time).
    """

    def __init__(self, model: torch.nn.Module, keep_grads: bool = True) -> None:
        from pointpeft_cli.engine.optim import adamw
        from pointpeft_cli.peft.trainable import param_groups

        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = adamw(param_groups(model, 0.05), lr=5e-4)
        self.keep_grads = keep_grads

    def forward(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from pointpeft_cli.engine.grads import keep_gradients

        if self.keep_grads:
            keep_gradients(self.params)  # allocates once, before the first forward
        index = torch.arange(points.shape[0], device=points.device)  # the same samples each step
        return F.cross_entropy(self.model(points, sample_index=index).float(), labels)

    def update(self, loss: torch.Tensor) -> float:
        self.opt.zero_grad(set_to_none=not self.keep_grads)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 10.0)
        self.opt.step()
        return float(loss.detach())

    def step(self, points: torch.Tensor, labels: torch.Tensor) -> float:
        return self.update(self.forward(points, labels))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def count_flops(stepper: Stepper, points: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """GFLOP of one step, split into forward + loss and backward + optimizer."""
    from torch.utils.flop_counter import FlopCounterMode

    # the backbone's oneDNN dense layers are not in torch's FLOP registry: 2 * rows * in * out
    def dense(x_shape, *args, out_shape=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
        rows = 1
        for d in x_shape[:-1]:
            rows *= d
        return 2 * rows * x_shape[-1] * out_shape[-1]

    mapping = {torch.ops.mkldnn._linear_pointwise: dense}  # both overloads
    with FlopCounterMode(display=False, custom_mapping=mapping) as fwd:
        loss = stepper.forward(points, labels)
    with FlopCounterMode(display=False, custom_mapping=mapping) as bwd:
        stepper.update(loss)
    f, b = fwd.get_total_flops() / 1e9, bwd.get_total_flops() / 1e9
    return {"forward": f, "backward": b, "total": f + b}


def random_batch(config: str, gen: torch.Generator, device: str):  # type: ignore[no-untyped-def]
    """One `(points, labels)` training batch of random clouds for `config`."""
    spec = CONFIGS[config]
    return (
        random_clouds(BATCH, spec["points"], gen).to(device),
        torch.randint(spec["classes"], (BATCH,), generator=gen).to(device),
    )


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one (config, method) in this process."""
    malloc = process_setup(args.threads)
    device = args.device
    # numba's import and the kernels' loading are start-up costs, like `import torch`: paid
    # before the baseline RSS, as the engine does before its first epoch
    if device == "cpu":
        from pointpeft_cli.peft import kernels

        kernels.warm_up()
    model = build(args.config, args.method, device)
    gen = torch.Generator().manual_seed(123)
    batches = [random_batch(args.config, gen, device) for _ in range(args.steps)]
    stepper = Stepper(model, keep_grads=args.grads == "kept")
    trainable = sum(p.numel() for p in stepper.params)
    total = sum(p.numel() for p in model.parameters())
    _sync(device)
    before = rss_mib()
    reset_ok = reset_peak_rss()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    times, cpu = [], []
    for points, labels in batches:
        start, cpu_start = time.perf_counter(), time.process_time()
        stepper.step(points, labels)
        _sync(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    peak = peak_rss_mib()
    out: dict[str, Any] = {
        "config": args.config,
        "method": args.method,
        "times_s": [round(t, 4) for t in times],
        "step_s": statistics.median(times[args.warmup :]),
        "cpu_s": statistics.median(cpu[args.warmup :]),
        "rss_before_mib": before,
        "peak_delta_mib": None if before is None or peak is None else peak - before,
        "peak_reset": reset_ok,
        "trainable_params": trainable,
        "total_params": total,
        "load_after": load_average(),
        "malloc": malloc,
    }
    if device == "cuda":
        out["peak_delta_mib"] = (torch.cuda.max_memory_allocated() - base_gpu) / 2**20
    if args.flops:
        out["gflop"] = count_flops(stepper, *batches[0])
    return out


def interleaved_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time every method in one process, one step each in turn, so that drift in the machine's
    speed (a shared VM's neighbours) hits all methods alike; memory stays per process."""
    process_setup(args.threads)
    device = args.device
    methods = args.method.split(",")
    keep = args.grads == "kept"
    steppers = {m: Stepper(build(args.config, m, device), keep) for m in methods}
    batch = random_batch(args.config, torch.Generator().manual_seed(123), device)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for cycle in range(args.warmup + args.steps):
        for method in methods if cycle % 2 == 0 else methods[::-1]:
            _sync(device)
            start = time.perf_counter()
            steppers[method].step(*batch)
            _sync(device)
            if cycle >= args.warmup:
                times[method].append(time.perf_counter() - start)
    return {"config": args.config, "times_s": times, "load_after": load_average()}


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> dict[str, Any] | None:
    """Median, range and 90 % bootstrap interval of `num / den` over the cycles (each pair ran
    back to back)."""
    if num not in times or den not in times:
        return None
    ratios = sorted(a / b for a, b in zip(times[num], times[den], strict=True))
    return {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1],
            "cycles": len(ratios),
            "interval90": ratio_interval(times[num], times[den], paired=True)}  # fmt: skip


def round_ratios(mine: list[dict[str, Any]], full: list[dict[str, Any]]) -> list[float]:
    """`step_s` ratios of the two processes of each round (run one after the other)."""
    by_round = {r["round"]: r["step_s"] for r in full}
    return [r["step_s"] / by_round[r["round"]] for r in mine if r["round"] in by_round]


def warm_steps(runs: list[dict[str, Any]], warmup: int) -> list[float]:
    """Every warm step of these processes, pooled."""
    return [t for r in runs for t in r["times_s"][warmup:]]


def summarise(
    runs: list[dict[str, Any]], configs: list[str], methods: list[str], peak: float, warmup: int
):
    """Per (config, method) medians over rounds, plus Point-PEFT/full ratios."""
    summary: dict[str, Any] = {}
    for config in configs:
        rows: dict[str, Any] = {}
        procs: dict[str, list[dict[str, Any]]] = {}
        for method in methods:
            mine = procs[method] = [
                r for r in runs if r["config"] == config and r["method"] == method
            ]
            step = median([r["step_s"] for r in mine])
            gflop = next((r["gflop"] for r in mine if "gflop" in r), None)
            rows[method] = {
                "step_s_rounds": [round(r["step_s"], 3) for r in mine],
                "step_s": step,
                "cpu_s": median([r["cpu_s"] for r in mine]),
                "samples_per_s": BATCH / step if step else None,
                "peak_delta_mib_rounds": [round(r["peak_delta_mib"] or 0, 1) for r in mine],
                "peak_delta_mib": median([r["peak_delta_mib"] for r in mine]),
                "trainable_params": mine[0]["trainable_params"] if mine else None,
                "gflop": gflop,
                "achieved_gflops": gflop["total"] / step if gflop and step else None,
                "pct_of_mm_peak": 100 * gflop["total"] / step / peak if gflop and step else None,
            }
        if "point-peft" in rows and "full" in rows:
            p, f = rows["point-peft"], rows["full"]
            pp_steps = warm_steps(procs["point-peft"], warmup)
            full_steps = warm_steps(procs["full"], warmup)
            rows["ratios"] = {
                "time": p["step_s"] / f["step_s"],
                "time_rounds": round_ratios(procs["point-peft"], procs["full"]),
                "time_interval90": ratio_interval(pp_steps, full_steps, paired=False),
                "cpu_time": p["cpu_s"] / f["cpu_s"],
                "memory": p["peak_delta_mib"] / f["peak_delta_mib"],
                "flops": p["gflop"]["total"] / f["gflop"]["total"]
                if p["gflop"] and f["gflop"]
                else None,
            }
            anchor = ANCHORS[config]
            rows["vs_original"] = {k: v / p["step_s"] for k, v in anchor.items()}
        for variant in VARIANTS:
            if variant in rows and "full" in rows:
                v, f = rows[variant], rows["full"]
                rows.setdefault("variant_ratios", {})[variant] = {
                    "time": v["step_s"] / f["step_s"],
                    "memory": v["peak_delta_mib"] / f["peak_delta_mib"],
                }
        summary[config] = rows
    return summary


def _fmt(v: Any, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _interval(bounds: Any) -> str:
    return "—" if not bounds else f"{bounds[0]:.3f}-{bounds[1]:.3f}"


def _phases(payload: dict[str, Any]) -> str:
    """` (mm 177 -> 170, dense layers 215 -> 213 at start -> end)`, or nothing for old payloads."""
    peaks = payload.get("matmul_gflops_start_end")
    if not peaks:
        return ""
    start, end = peaks["start"], peaks["end"]
    return (
        f" (`mm` {start['mm']:.0f} -> {end['mm']:.0f}, dense layers {start['linear']:.0f} -> "
        f"{end['linear']:.0f} GFLOP/s at start -> end)"
    )


def markdown(payload: dict[str, Any]) -> str:
    """The result tables."""
    m = payload["machine"]
    lines = [
        "# Training step: Point-PEFT vs full fine-tuning vs linear (Point-MAE, batch 32)",
        "",
        f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}, device {payload['device']}, "
        f"{m['date']}; {payload['rounds']} rounds x {payload['steps']} steps "
        f"(median of steps {payload['warmup'] + 1}-{payload['steps']}); "
        f"matmul peak {payload['matmul_peak_gflops']:.0f} GFLOP/s{_phases(payload)}; "
        f"load average seen {payload['load_min']}-{payload['load_max']}; "
        f"malloc: {payload['malloc']}; gradient buffers: {payload.get('grads', 'freed')}; "
        f"geometry adapter: {payload.get('adapter_kernels', 'PyTorch')}; "
        f"dense layers: {payload.get('dense_layers', 'PyTorch')}.",
        "",
        "| config | method | step s (rounds) | **median s** | CPU s | samples/s "
        "| peak mem MiB (rounds) | **median MiB** | trainable | GFLOP fwd / bwd+opt / total "
        "| GFLOP/s | % mm peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config, rows in payload["summary"].items():
        for method in payload["methods"]:
            r = rows[method]
            g = r["gflop"]
            gtxt = "—" if not g else f"{g['forward']:.1f} / {g['backward']:.1f} / {g['total']:.1f}"
            lines.append(
                f"| {CONFIGS[config]['label']} | {method} | {r['step_s_rounds']} "
                f"| **{_fmt(r['step_s'])}** | {_fmt(r['cpu_s'])} | {_fmt(r['samples_per_s'], 1)} "
                f"| {r['peak_delta_mib_rounds']} | **{_fmt(r['peak_delta_mib'], 0)}** "
                f"| {r['trainable_params']:,} | {gtxt} | {_fmt(r['achieved_gflops'], 1)} "
                f"| {_fmt(r['pct_of_mm_peak'], 0)} |"
            )
    lines += ["", "| config | time point-peft/full | by round | 90 % interval (pooled steps) "
              "| CPU time | memory point-peft/full "
              "| FLOPs point-peft/full | speed-up vs original (released / no_grad) "
              "| target time | target memory |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    targets = {"scan": 0.75, "modelnet": 0.80}
    for config, rows in payload["summary"].items():
        if "ratios" not in rows:
            continue
        ra, vo = rows["ratios"], rows["vs_original"]
        by_round = " / ".join(f"{v:.3f}" for v in ra.get("time_rounds", [])) or "—"
        lines.append(
            f"| {CONFIGS[config]['label']} | **{ra['time']:.3f}** | {by_round} "
            f"| {_interval(ra.get('time_interval90'))} | {ra['cpu_time']:.3f} "
            f"| **{ra['memory']:.3f}** "
            f"| {_fmt(ra['flops'], 3)} | {vo['released']:.1f}x / {vo['no_grad']:.1f}x "
            f"| ≤ {targets[config]} | ≤ 0.5 |"
        )
    inter = payload.get("interleaved") or {}
    if inter:
        lines += [
            "",
            f"Interleaved timing (one process per config, {payload['interleaved_cycles']} cycles "
            "of one step per method in turn, order flipped every cycle; median step s, and the "
            "ratio of the two steps of each cycle, with its 90 % bootstrap interval over cycles):",
            "",
            "| config | "
            + " | ".join(f"{m} s" for m in payload["methods"])
            + " | **point-peft/full** (min-max) | 90 % interval | variants/full |",
            "|---|" + "---|" * len(payload["methods"]) + "---|---|---|",
        ]
        for config, res in inter.items():
            med = [_fmt(statistics.median(res["times_s"][m])) for m in payload["methods"]]
            main = res["ratios"].get("point-peft")
            main_txt = (
                "—"
                if not main
                else (f"**{main['median']:.3f}** ({main['min']:.2f}-{main['max']:.2f})")
            )
            others = ", ".join(f"{m} {r['median']:.3f}" for m, r in res["ratios"].items()
                               if m != "point-peft" and r)  # fmt: skip
            interval = _interval(main.get("interval90")) if main else "—"
            lines.append(f"| {CONFIGS[config]['label']} | " + " | ".join(med)
                         + f" | {main_txt} | {interval} | {others or '—'} |")  # fmt: skip
    variants = [(c, name, ra) for c, rows in payload["summary"].items()
                for name, ra in rows.get("variant_ratios", {}).items()]  # fmt: skip
    if variants:
        lines += ["", "Point-PEFT variants against full fine-tuning:", "",
                  "| config | variant | what | time variant/full | memory variant/full |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for config, name, ra in variants:
            label = CONFIGS[config]["label"]
            lines.append(
                f"| {label} | {name} | {VARIANTS[name]} | {ra['time']:.3f} | {ra['memory']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2, help="leading steps left out")
    parser.add_argument("--configs", default="scan,modelnet")
    parser.add_argument("--methods", default=",".join(STEP_METHODS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting step")
    parser.add_argument(
        "--grads",
        choices=("kept", "freed"),
        default="kept",
        help="gradient buffers: kept from the first forward on, as the engine does, or freed "
        "before every backward (the engine before kept buffers; same numbers)",
    )
    parser.add_argument(
        "--malloc",
        choices=("tuned", "default"),
        default="tuned",
        help="workers' malloc: tuned as the CLI's training commands set it (the default), or "
        "glibc's defaults (POINTPEFT_MALLOC)",
    )
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=0,
        help="bytes: fix glibc's mmap threshold in the workers (MALLOC_MMAP_THRESHOLD_) so freed "
        "tensors go back to the OS and RSS tracks live memory (overrides --malloc); 0 = unset",
    )
    parser.add_argument(
        "--interleaved",
        type=int,
        default=8,
        help="cycles of the interleaved timing phase (all methods in one process, one step each "
        "in turn); 0 = skip it",
    )
    parser.add_argument("--out", default="train_step", help="stem of the files in bench/out/")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interleaved-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # the interleaved worker's --steps are cycles counted after its --warmup cycles
    if args.steps <= args.warmup and not args.interleaved_worker:
        parser.error("--steps must exceed --warmup")
    if args.interleaved < 0:
        parser.error("--interleaved must be >= 0")
    return args


def adapter_kernels(device: str) -> str:
    """Which geometry-adapter path the workers run (`POINTPEFT_KERNELS=torch` forces PyTorch)."""
    from pointpeft_cli.peft import kernels

    if not kernels.usable(torch.zeros(1, device=device)):
        return "PyTorch"
    import numba

    return f"compiled CPU kernels (numba {numba.__version__})"


def dense_layers(device: str) -> str:
    """Which library runs the backbone's dense layers (`POINTPEFT_LINEAR=torch` forces PyTorch)."""
    from pointpeft_cli.models.linear import backend

    return backend(device)


def main() -> None:
    args = parse_args()
    if args.interleaved_worker:
        print(json.dumps(interleaved_worker(args)))
        return
    if args.worker:
        print(json.dumps(worker(args)))
        return
    configs, methods = selected(args.configs, args.methods, CONFIGS, STEP_METHODS)
    env = {"POINTPEFT_MALLOC": args.malloc}
    if args.mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    peaks = {"start": matmul_peaks(args.threads)}
    peak = max(peaks["start"].values())
    loads, runs = [load_average()], []
    for rnd in range(args.rounds):
        for config in configs:
            order = methods if rnd % 2 == 0 else methods[::-1]
            for method in order:
                extra = ["--flops"] if rnd == 0 and not args.no_flops else []
                run = run_worker(
                    Path(__file__),
                    ["--config", config, "--method", method, "--steps", str(args.steps),
                     "--warmup", str(args.warmup), "--threads", str(args.threads),
                     "--device", args.device, "--grads", args.grads, *extra],
                    env,
                )  # fmt: skip
                run["round"] = rnd + 1
                runs.append(run)
                loads.append(run["load_after"])
                print(
                    f"round {rnd + 1} {config:8s} {method:10s} {run['step_s']:.3f} s/step "
                    f"(CPU {run['cpu_s']:.3f} s) "
                    f"peak +{run['peak_delta_mib']:.0f} MiB  load {run['load_after']}",
                    flush=True,
                )
    interleaved: dict[str, Any] = {}
    for config in configs if args.interleaved else []:
        res = run_worker(
            Path(__file__),
            ["--interleaved-worker", "--config", config, "--method", ",".join(methods),
             "--steps", str(args.interleaved),
             "--warmup", str(args.warmup), "--threads", str(args.threads),
             "--device", args.device, "--grads", args.grads],
            env,
        )  # fmt: skip
        res["ratios"] = {
            m: paired_ratio(res["times_s"], m, "full")
            for m in methods
            if m not in ("full", "linear")
        }
        interleaved[config] = res
        loads.append(res["load_after"])
        shown = [f"{m} {r['median']:.3f}" for m, r in res["ratios"].items() if r]
        print(f"interleaved {config} (x full): " + ", ".join(shown), flush=True)
    peaks["end"] = matmul_peaks(args.threads)
    one_min = [la[0] for la in loads if la]
    payload = {
        "machine": machine_info(args.threads),
        "device": args.device,
        "batch": BATCH,
        "rounds": args.rounds,
        "steps": args.steps,
        "warmup": args.warmup,
        "methods": methods,
        "matmul_peak_gflops": peak,
        "matmul_gflops_start_end": peaks,
        "malloc": runs[0]["malloc"] if runs else args.malloc,
        "grads": args.grads,
        "adapter_kernels": adapter_kernels(args.device),
        "dense_layers": dense_layers(args.device),
        "load_min": min(one_min, default=None),
        "load_max": max(one_min, default=None),
        "anchors_original_s": ANCHORS,
        "summary": summarise(runs, configs, methods, peak, args.warmup),
        "interleaved_cycles": args.interleaved,
        "interleaved": interleaved,
        "runs": runs,
    }
    md = markdown(payload)
    paths = write_outputs(args.out, payload, md)
    print(md)
    print("wrote", *paths)


if __name__ == "__main__":
    main()
