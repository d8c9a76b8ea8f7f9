"""Shared helpers of the bench scripts: machine facts, RSS peaks, matmul peak, outputs.

Kept dependency-free beyond torch so every script can run as a plain `python bench/x.py`.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pointpeft_cli.fsutil import atomic_write_text

OUT_DIR = Path(__file__).resolve().parent / "out"

#: Paper-size benchmark configurations: task name, classes, points, groups, group size, bank rows.
CONFIGS: dict[str, dict[str, Any]] = {
    "scan": {"label": "ScanObjectNN", "classes": 15, "points": 2048, "groups": 128, "bank": 2309},
    "modelnet": {"label": "ModelNet40", "classes": 40, "points": 1024, "groups": 64, "bank": 9843},
}


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float | None:
    """Current resident set size (MiB), or None where /proc is missing."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


def peak_rss_mib() -> float | None:
    """Peak resident set size since start or the last `reset_peak_rss` (MiB)."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's VmHWM counter (`clear_refs` 5); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def load_average() -> list[float]:
    """The 1/5/15-minute load averages (empty where unavailable)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform string as a fallback)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def process_setup(threads: int) -> str:
    """Threads and malloc as the CLI's training commands set them (`engine.allocator`; the
    worker's environment may carry `POINTPEFT_MALLOC`); returns the malloc description."""
    from pointpeft_cli.engine.allocator import configure_allocator

    torch.set_num_threads(threads)
    return configure_allocator().detail.removeprefix("malloc: ")


def matmul_peaks(threads: int, size: int = 2048, repeats: int = 20) -> dict[str, float]:
    """Median GFLOP/s of a float32 `size x size` matmul by PyTorch's `mm` (MKL on CPU) and by the
    backbone's dense-layer backend (`pointpeft_cli.models.linear`, oneDNN on CPU), timed
    alternately. The faster is the machine's practical peak (on AMD CPUs MKL's float32 GEMM is
    15-30 % slower than oneDNN's, so `mm` alone understates it). Full fine-tuning's weight
    gradients run on `mm`, the other dense layers on the backend, and this VM's speed drifts,
    so the two figures also say which phase a run was in."""
    from pointpeft_cli.models.linear import linear

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    kernels = {"mm": lambda: torch.mm(a, b), "linear": lambda: linear(a, b)}
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(3):
        for run in kernels.values():
            run()
    for _ in range(repeats):
        for name, run in kernels.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: 2 * size**3 / statistics.median(t) / 1e9 for name, t in times.items()}


def run_worker(script: Path, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `script --worker ...` in a fresh process and parse the JSON line it prints last.

    `env` adds variables to the worker's environment (e.g. glibc malloc tunables).
    """
    proc = subprocess.run(
        [sys.executable, str(script), "--worker", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def write_outputs(stem: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write `bench/out/<stem>.json` and `.md`; returns both paths."""
    js, md = OUT_DIR / f"{stem}.json", OUT_DIR / f"{stem}.md"
    atomic_write_text(js, json.dumps(payload, indent=2) + "\n")
    atomic_write_text(md, markdown)
    return js, md


def selected(configs: str, methods: str, known_configs: Any, known_methods: Any):
    """The comma-separated --configs / --methods choices, checked against the known names."""
    chosen = ([c for c in configs.split(",") if c], [m for m in methods.split(",") if m])
    for name in chosen[0] + chosen[1]:
        if name not in known_configs and name not in known_methods:
            raise SystemExit(f"unknown config or method {name!r}")
    return chosen


def median(values: list[float]) -> float | None:
    """Median of the non-None values, or None."""
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ratio_interval(
    num: list[float], den: list[float], paired: bool, level: float = 0.9, reps: int = 4000
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of a time ratio (seeded: the same data, the same interval).

    Paired (`num[i]` and `den[i]` ran back to back): the median of the per-pair ratios, pairs
    resampled. Unpaired (two processes' steps): the ratio of the two medians, each side's steps
    resampled on its own. Steps of one process are not independent (a VM's speed drifts), so
    read the interval as the spread this data allows, not as a guarantee.
    """
    if not num or not den or (paired and len(num) != len(den)):
        return None
    rng = random.Random(0)
    ratios = [a / b for a, b in zip(num, den, strict=True)] if paired else []
    stats = []
    for _ in range(reps):
        if paired:
            stats.append(statistics.median(ratios[rng.randrange(len(ratios))] for _ in ratios))
        else:
            a = statistics.median(rng.choices(num, k=len(num)))
            stats.append(a / statistics.median(rng.choices(den, k=len(den))))
    stats.sort()
    tail = (1.0 - level) / 2
    return stats[int(tail * (reps - 1))], stats[int((1.0 - tail) * (reps - 1))]


def random_clouds(batch: int, points: int, generator: torch.Generator) -> torch.Tensor:
    """`[B, N, 3]` anisotropic Gaussian blobs, centred and scaled to unit radius."""
    x = torch.randn(batch, points, 3, generator=generator) * torch.tensor([1.0, 0.6, 0.3])
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=-1).amax(dim=1).view(-1, 1, 1)


def random_bank(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """A random L2-normalised `[rows, dim]` memory bank."""
    bank = torch.randn(rows, dim, generator=generator)
    return bank / bank.norm(dim=1, keepdim=True)
