"""Multi-process training through PyTorch's own launcher (`torchrun ... -m pointpeft_cli`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process; `enabled` is False for a plain single-process run."""

    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_spec: str) -> DistInfo:
    """Joins the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_spec != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistInfo(True, rank, world, local_rank)


def is_main_process() -> bool:
    """True unless this process is a non-zero rank of a torchrun launch."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_flag(info: DistInfo, value: bool) -> bool:
    """Rank 0's `value` on every rank (e.g. "stop now")."""
    if not info.enabled:
        return value
    t = torch.tensor([1 if value else 0], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return bool(t.item())


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> Any:
    """DistributedDataParallel around `model` (a no-op for single-process runs).

    Buffers are not broadcast every step: the memory bank is a (large) buffer that every rank
    already holds, and BatchNorm statistics are taken from rank 0 when saving, as upstream.
    """
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    import inspect

    # torch >= 2.13 renamed the switch; older releases only know broadcast_buffers
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in params
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(model, device_ids=ids, **no_sync)
