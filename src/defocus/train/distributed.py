"""Distributed training on PyTorch's own engine: ``torchrun`` starts the processes, this module joins them.

``defocus train`` run by ``torchrun --nproc_per_node=N`` (or ``srun`` with the same environment variables) finds
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its environment and joins a process group: ``gloo`` on CPUs, ``nccl`` on
GPUs (one per process, ``cuda:LOCAL_RANK``). Each rank holds a disjoint share of the data (see
:class:`~defocus.data.sweeps.DataShards`), gradients are averaged by DistributedDataParallel, and rank 0 alone writes
logs, checkpoints and exports.

Failure: a rank that raises prints one line naming itself and exits non-zero; ``torchrun`` then stops the others. A
rank whose peer vanished without ``torchrun`` (plain ``srun``) gets an error from its next collective (``gloo``
reports the closed connection) or, at the latest, after ``dist_timeout_s``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from defocus.errors import DefocusError

BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank ``rank`` of ``world_size``, computing on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: a single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise DefocusError(f"environment variable {name}={value!r} is not an integer") from None


def launched_distributed() -> bool:
    """True when started by a launcher: torchrun (even with one process, so that one-process runs take the same
    path) or srun-style environments with WORLD_SIZE > 1."""
    world = _env_int("WORLD_SIZE")
    return world is not None and (world > 1 or "MASTER_ADDR" in os.environ)


def is_main_process() -> bool:
    """True outside a launcher and on rank 0 under one (what reports and exports)."""
    return (_env_int("RANK") or 0) == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU where CUDA is available, else the CPU; or ``cpu``/``cuda``/``cuda:K``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DefocusError(f"device {name} asked for but CUDA is not available (device=cpu or device=auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DefocusError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:K") from None


def init_distributed(device: str = "auto", backend: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Joins the process group torchrun describes in the environment, or returns the single-process context.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:K`` (``cuda`` means ``cuda:LOCAL_RANK``).
        backend: ``auto`` (``nccl`` for CUDA devices, else ``gloo``), ``gloo`` or ``nccl``.
        timeout_s: how long a collective waits for the other ranks before it fails.
    """
    if backend not in BACKENDS:
        raise DefocusError(f"unknown distributed backend {backend!r}; use {', '.join(BACKENDS)}")
    world = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    local_rank = _env_int("LOCAL_RANK") or 0
    dev = resolve_device(device, local_rank)
    if not launched_distributed():
        return DistContext(device=dev)
    if not 0 <= rank < world:
        raise DefocusError(f"RANK={rank} is outside WORLD_SIZE={world}")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise DefocusError(f"WORLD_SIZE={world} but {var} is not set: start with torchrun (see README)")
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise DefocusError("the nccl backend needs CUDA devices (use device=cuda, or backend gloo on CPUs)")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=float(timeout_s)),
                                **({"device_id": dev} if backend == "nccl" else {}))
    except (RuntimeError, ValueError) as exc:
        raise DefocusError(f"cannot join the process group ({backend}, rank {rank} of {world}): "
                           f"{str(exc).strip().splitlines()[0]}") from None
    return DistContext(rank, world, local_rank, dev, backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Sums a dict of floats over ranks (same keys on every rank, in sorted order)."""
    if not ctx.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                     device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return dict(zip(keys, t.cpu().tolist()))


def gather_to_all(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
