"""Benchmark the ModelNet40 text -> processed h5 step (parse + FPS-8192 + write).

Generates ``--shapes`` realistic shape files in the upstream ``modelnet40_normal_resampled``
layout (10,000 lines ``x,y,z,nx,ny,nz``, 6 decimals, random line order; surfaces from the
``shapes`` generator), runs the real preprocessing on them, and extrapolates to the 12,311 shapes
of ModelNet40. Upstream's numpy FPS needs about 7 hours for those; the target is 15 minutes.

    python bench/preprocess.py --shapes 400 --workers 2

Writes ``bench/out/preprocess.json`` and ``bench/out/preprocess.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pointpeft_cli.data.io import read_text_points
from pointpeft_cli.data.modelnet40_raw import process_text, text_entries
from pointpeft_cli.data.shapes import generate
from pointpeft_cli.tasks import MODELNET40_CLASSES, SHAPES_CLASSES

MODELNET40_SHAPES = 12_311
TARGET_S = 15 * 60


def write_layout(root: Path, shapes: int, points: int, seed: int) -> None:
    """Shape files plus ``modelnet40_shape_names.txt`` and a train list in the upstream layout."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    ids = []
    for i in range(shapes):
        cls = MODELNET40_CLASSES[i % len(MODELNET40_CLASSES)]
        rng = np.random.default_rng([seed, i])
        xyz = generate(i % len(SHAPES_CLASSES), rng, points)
        normals = rng.standard_normal((points, 3))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        (root / cls).mkdir(exist_ok=True)
        sid = f"{cls}_{i + 1:04d}"
        rows = np.concatenate([xyz, normals], axis=1)
        np.savetxt(root / cls / f"{sid}.txt", rows, fmt="%.6f", delimiter=",")
        ids.append(sid)
    (root / "modelnet40_train.txt").write_text("\n".join(ids) + "\n")
    (root / "modelnet40_test.txt").write_text("")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(shapes: int, points: int, seed: int, chunk: int, workers: int | None = None) -> dict:
    """Time parse-only and the full preprocessing on a generated layout."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "modelnet40_normal_resampled"
        t0 = time.perf_counter()
        write_layout(root, shapes, points, seed)
        gen_s = time.perf_counter() - t0
        entries = text_entries(root, "train", MODELNET40_CLASSES)
        t0 = time.perf_counter()
        for e in entries[: min(100, len(entries))]:
            read_text_points(e.path)
        parse_per_shape = (time.perf_counter() - t0) / min(100, len(entries))
        t0, c0 = time.perf_counter(), _cpu_seconds()
        process_text(entries, Path(tmp) / "out.h5", chunk=chunk, workers=workers)
        total = time.perf_counter() - t0
        cpu = _cpu_seconds() - c0
    per_shape = total / shapes
    return {
        "shapes": shapes,
        "points_per_shape": points,
        "fps_points": 8192,
        "chunk": chunk,
        "torch_threads": torch.get_num_threads(),
        "workers": workers if workers is not None else min(2, os.cpu_count() or 1),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "generate_seconds": round(gen_s, 2),
        "parse_seconds_per_shape": round(parse_per_shape, 5),
        "seconds": round(total, 2),
        "shapes_per_second": round(shapes / total, 2),
        "cpu_seconds": round(cpu, 2),
        "cpu_seconds_per_shape": round(cpu / shapes, 4),
        "extrapolated_modelnet40_cpu_seconds": round(cpu / shapes * MODELNET40_SHAPES, 1),
        "extrapolated_modelnet40_seconds": round(per_shape * MODELNET40_SHAPES, 1),
        "target_seconds": TARGET_S,
    }


def write_reports(result: dict, out: Path) -> None:
    """JSON and a markdown table under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "preprocess.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    est = result["extrapolated_modelnet40_seconds"]
    lines = [
        "# ModelNet40 text -> h5 preprocessing (parse + FPS 8192 + write)",
        "",
        "| shapes | workers | s/shape | CPU s/shape | parse s/shape | shapes/s | est. 12,311 shapes"
        " (wall) | CPU time for 12,311 | target (wall) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result['shapes']} | {result['workers']} | "
        f"{result['seconds'] / result['shapes']:.4f} | {result['cpu_seconds_per_shape']:.4f} | "
        f"{result['parse_seconds_per_shape']:.4f} | "
        f"{result['shapes_per_second']} | {est / 60:.1f} min | "
        f"{result['extrapolated_modelnet40_cpu_seconds'] / 60:.1f} min | {TARGET_S / 60:.0f} min |",
        "",
    ]
    (out / "preprocess.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", type=int, default=400)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=64, help="shapes per batched FPS call")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.shapes, args.points, args.seed, args.chunk, args.workers)
    write_reports(result, args.out)
    est = result["extrapolated_modelnet40_seconds"]
    print(
        f"{result['shapes']} shapes in {result['seconds']:.1f} s "
        f"({result['shapes_per_second']:.2f} shapes/s, "
        f"parse {result['parse_seconds_per_shape']:.4f} s/shape, {result['workers']} workers); "
        f"12,311 shapes: {est / 60:.1f} min wall, "
        f"{result['extrapolated_modelnet40_cpu_seconds'] / 60:.1f} CPU-min "
        f"(target {TARGET_S / 60:.0f} min wall on 2 cores)"
    )


if __name__ == "__main__":
    main()
