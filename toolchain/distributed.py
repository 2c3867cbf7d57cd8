"""Data-parallel training under `torchrun`: joining the process group and knowing which process speaks.

`torchrun --nproc_per_node=K -m toolchain.cli train ...` starts K processes with RANK and WORLD_SIZE set; each joins the
group (gloo on CPU, nccl on GPU), trains on its shard of every batch, and only rank 0 prints and writes files.
Launched plainly, nothing here does anything and the world has size 1. Torch is imported only when needed, so
that the console (which asks `is_main`) does not load it at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

T = TypeVar("T")

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


def on_main(work: Callable[[], T]) -> T | None:
    """Run `work` on rank 0 only and return its result there (None on the other ranks), which wait for it. When
    it fails, the other ranks stop too, with rank 0's message, instead of waiting at the next collective call
    until the timeout; rank 0 raises its own error."""
    if not _group():
        return work()
    error: BaseException | None = None
    result = None
    if is_main():
        try:
            result = work()
        except BaseException as e:  # noqa: BLE001  (passed on to the other ranks, then raised again)
            error = e
    failure = from_main(f"{type(error).__name__}: {error}" if error is not None else None)
    if error is not None:
        raise error
    if failure is not None:
        from .errors import ToolchainError

        raise ToolchainError(f"rank 0 stopped ({failure}); every process stops with it")
    return result


def training_device():
    import torch

    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")
