"""Micro-benchmark of the pure-PyTorch point ops (FPS, kNN, grouping, Chamfer).

Usage: ``python bench/ops.py [--threads N] [--device cpu|cuda] [--quick]``. Prints one line per case
with the best of a few repeats; ``--quick`` skips the ModelNet40 case (10,000 -> 8,192).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from pointpeft_cli.models import ops


def _best_ms(fn: Callable[[], object], repeats: int, device: str) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    gen = torch.Generator().manual_seed(0)

    def cloud(batch: int, num: int) -> torch.Tensor:
        return torch.rand(batch, num, 3, generator=gen).to(dev)

    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}")
    cases: list[tuple[str, int, Callable[[], object]]] = []
    for batch, num, n in ((32, 2048, 128), (32, 1024, 64)):
        x = cloud(batch, num)
        cases.append(
            (f"fps {num}->{n} B={batch}", batch, lambda x=x, n=n: ops.farthest_point_sample(x, n))
        )
    for batch, num, g, m in ((32, 1024, 64, 32), (32, 2048, 128, 32)):
        x = cloud(batch, num)
        cases.append(
            (f"group {num} pts {g}x{m} B={batch}", batch, lambda x=x, g=g, m=m: ops.group(x, g, m))
        )
    a, b = cloud(32 * 38, 32), cloud(32 * 38, 32)
    cases.append(("chamfer-l2 1216 patches 32x32", 32, lambda: ops.chamfer_distance(a, b)))
    if not args.quick:
        x = cloud(64, 10000)
        cases.append(("fps 10000->8192 B=64", 64, lambda: ops.farthest_point_sample(x, 8192)))
    for name, batch, fn in cases:
        repeats = 1 if "10000" in name else 5
        ms = _best_ms(fn, repeats, dev)
        print(f"{name:34s} {ms:9.1f} ms  {ms / batch:8.2f} ms/sample")


if __name__ == "__main__":
    main()
