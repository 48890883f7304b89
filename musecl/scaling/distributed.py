"""Several processes training one model (``torchrun``, DistributedDataParallel).

One process per GPU (or per group of CPU cores) runs the same program; each trains on its own
share of every epoch's triplets and the gradients are averaged after each step, so the model
stays identical on every process. The core asks its questions of
:func:`musecl.training.processes` (one process unless told otherwise); :func:`init_from_env`
joins the group ``torchrun`` describes and installs :class:`TorchProcesses` in its place.

Launch (see the scaling appendix)::

    torchrun --nproc_per_node=8 -m musecl.cli train-encoders CITY --params P.yaml --out OUT
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from musecl.cache import Cache
from musecl.city import City
from musecl.config import RunConfig
from musecl.methods.multisemantic import image_stage
from musecl.runner import require_enough_regions, resolve_city
from musecl.training import OneProcess, processes, resolve_device, use_processes


class TorchProcesses(OneProcess):
    """The processes of a ``torch.distributed`` group (initialised before this is made)."""

    def rank(self) -> int:
        return dist.get_rank()

    def world_size(self) -> int:
        return dist.get_world_size()

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """Every ``world_size``-th item from position ``rank``, the order (the same on every
        process) first padded by wrapping around so that every process takes the same number of
        steps (one that stopped early would leave the others waiting in the gradient all-reduce)."""
        w = self.world_size()
        pad = (-len(order)) % w
        if pad:
            order = torch.cat([order, order[:pad]])
        return order[self.rank()::w]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list:
        out: list = [None] * self.world_size()
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def join_process_group() -> None:
    """Train with the ``torch.distributed`` group this process is in (when it has more than one)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        use_processes(TorchProcesses())


def leave_process_group() -> None:
    """Back to one process: destroys the group (if any) and uninstalls it."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    use_processes(OneProcess())


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
    join_process_group()
    return resolved


def train_encoders(city: str | os.PathLike | City, config: RunConfig, cache_dir: str | os.PathLike,
                   kinds: Sequence[str] = ("satellite", "streetview"), triplets: str = "similarity",
                   progress: bool = True) -> dict[str, Path]:
    """Train MuseCL's image encoders (the costly stages) into the cache, in this process or, under
    ``torchrun``, in every process it started (one per GPU): ``config.machine.train_processes`` must say how
    many, since that changes the weights and so the cache key. ``musecl run`` with the same settings
    and cache then reuses them. Returns the stage folder of each kind."""
    device = init_from_env(config.machine.device)  # image_stage checks it against train_processes
    group = processes()
    if group.is_main():  # a named city is written once, then read by every process
        resolve_city(city)
    group.barrier()
    city = resolve_city(city)
    require_enough_regions(city)
    config = config.replace(device=str(device))
    cache = Cache(cache_dir)
    return {kind: image_stage(city, config, kind, cache, progress=progress and group.is_main(), triplets=triplets)
            for kind in kinds}
