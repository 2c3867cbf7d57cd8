"""Data-parallel training under `torchrun`: joining the process group and knowing which process speaks.

`torchrun --nproc_per_node=K -m toolchain.cli train ...` starts K processes with RANK and WORLD_SIZE set; each joins the
group (gloo on CPU, nccl on GPU), trains on its shard of every batch, and only rank 0 prints and writes files.
Launched plainly, nothing here does anything and the world has size 1. Torch is imported only when needed, so
that the console (which asks `is_main`) does not load it at start-up.
"""

from __future__ import annotations

import os
from datetime import timedelta

# Ranks other than 0 wait at a barrier while rank 0 searches, which can take hours.
_BARRIER_TIMEOUT = timedelta(hours=24)


def init_from_env() -> None:
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=_BARRIER_TIMEOUT)
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())


def _group():
    """torch.distributed when this process has joined a group, else None."""
    import torch.distributed as dist

    return dist if dist.is_initialized() else None


def world_size() -> int:
    group = _group()
    return group.get_world_size() if group else 1


def rank() -> int:
    group = _group()
    return group.get_rank() if group else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 of a torchrun launch (whether or not the command joins a group), or a plain process."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    group = _group()
    if group:
        group.barrier()


def from_main(value):
    """Rank 0's `value`, on every process: for decisions only rank 0 can make (it alone measures on the target)."""
    group = _group()
    if not group:
        return value
    box = [value]
    group.broadcast_object_list(box, src=0)
    return box[0]


def training_device():
    import torch

    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")
