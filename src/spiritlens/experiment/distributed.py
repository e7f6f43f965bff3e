"""Sharding with PyTorch's own launcher: under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the ranks meet
at gloo barriers between the experiment's stages; one process (world size 1) skips all of it."""

from __future__ import annotations

import datetime
import os


def rank_and_world() -> tuple[int, int]:
    """(``$RANK``, ``$WORLD_SIZE``), (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init(world: int) -> None:
    """Join the gloo process group (no time limit a stage could hit: 24 hours)."""
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def close(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
