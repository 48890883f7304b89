"""Several processes training one model (``torchrun``, DistributedDataParallel): the few
collective operations musecl needs, in one place.

One process per GPU (or per group of CPU cores) runs the same program; each trains on its own
share of every epoch's triplets and the gradients are averaged after each step, so the model
stays identical on every process. Nothing here does anything in a single process: every function
falls back to the one-process answer, so library code calls them unconditionally.

Launch (see the scaling appendix)::

    torchrun --nproc_per_node=8 -m musecl.cli train-encoders CITY --params P.yaml --out OUT
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """The process that writes files (checkpoints, cache folders, results)."""
    return rank() == 0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'cpu' (default), 'cuda' (error if absent) or 'auto' (cuda when available)."""
    if device is None or device == "cpu":
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was asked for but torch sees no CUDA GPU; "
                           "use device='cpu' or device='auto'")
    return device


def launched_world_size() -> int:
    """How many processes ``torchrun`` started (``WORLD_SIZE``; 1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str | None = None) -> torch.device:
    """Join the process group ``torchrun`` describes in the environment (once) and return this
    process's device: ``cuda:LOCAL_RANK`` with NCCL when ``device`` is cuda/auto and a GPU is there,
    else the CPU with Gloo. Outside torchrun it only resolves ``device``."""
    resolved = resolve_device(device)
    if launched_world_size() <= 1:
        return resolved
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                               "start at most one process per GPU (torchrun --nproc_per_node)")
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return resolved


def shard(order: torch.Tensor) -> torch.Tensor:
    """This process's share of an epoch's item order (the same ``order`` on every process):
    every ``world_size``-th item from position ``rank``, the order first padded by wrapping around
    so that every process takes the same number of steps (one that stopped early would leave the
    others waiting in the gradient all-reduce forever)."""
    w = world_size()
    if w == 1:
        return order
    pad = (-len(order)) % w
    if pad:
        order = torch.cat([order, order[:pad]])
    return order[rank()::w]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (returned for convenience)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather(obj: Any) -> list:
    """Every process's ``obj``, in rank order (a list of one outside a process group)."""
    if not active():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel inside a process group; unchanged otherwise."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
