"""Data-parallel training under `torchrun`: joining the process group and knowing which process speaks.

`torchrun --nproc_per_node=K toolchain train ...` starts K processes with RANK and WORLD_SIZE set; each joins the
group (gloo on CPU, nccl on GPU), trains on its shard of every batch, and only rank 0 prints and writes files.
Launched plainly, nothing here does anything and the world has size 1.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

# Ranks other than 0 wait at a barrier while rank 0 searches, which can take hours.
_BARRIER_TIMEOUT = timedelta(hours=24)


def init_from_env() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=_BARRIER_TIMEOUT)
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def training_device() -> torch.device:
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
