"""torch.distributed support: which shard of the probing set a process owns, and gathering.

Under ``torchrun`` every process runs the same command; each streams its own contiguous
shard of the probing set, and the shards' states are merged exactly (see
:meth:`~neurolabel.plugin_core.pipeline.topk.StreamingTopK.merge`). Outside a process group every
function here is the single-process identity.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from ..errors import NeurolabelError


def launched_by_torchrun() -> bool:
    """True when the environment describes a multi-process launch (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes, once; NCCL on CUDA, gloo otherwise.

    Args:
        device: The device this process computes on (its CUDA index is made current).

    Returns:
        Whether a process group with more than one rank is active.
    """
    if not launched_by_torchrun():
        return is_active()
    if not dist.is_available():
        raise NeurolabelError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return is_active()


def is_active() -> bool:
    """Whether this process is one of several ranks of an initialized process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if not is_active():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def local_device(device: torch.device) -> torch.device:
    """The CUDA device of this rank (``LOCAL_RANK``) when ``device`` is a bare ``cuda``."""
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shard(count: int) -> range:
    """The contiguous slice of ``range(count)`` this rank streams.

    Examples:
        >>> shard(10)
        range(0, 10)
    """
    rank, world = rank_and_world()
    return range(count * rank // world, count * (rank + 1) // world)


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` outside a process group).

    Objects travel pickled; tensors in them should be on the CPU.
    """
    if not is_active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
