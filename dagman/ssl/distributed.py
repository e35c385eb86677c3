"""Process-group setup for pretraining under ``torchrun`` (DESIGN 6): DDP with NCCL on GPUs, gloo on CPU.

``torchrun --nproc_per_node G -m dagman.cli pretrain ...`` starts G processes with RANK, LOCAL_RANK and
WORLD_SIZE in their environment; :func:`setup_distributed` reads them, picks the backend from the device and
joins the group. Without those variables (a plain ``dagman pretrain``) it returns a single-process context
and initialises nothing, so the engine runs the same code path either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "all_gather",
    "all_reduce_sum",
    "barrier",
    "cleanup_distributed",
    "resolve_device",
    "setup_distributed",
    "torchrun_env",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands.

    Attributes:
        rank: global rank (0 when not distributed).
        local_rank: rank on this node (selects the GPU).
        world_size: number of processes.
        device: this process's device.
        backend: "nccl", "gloo" or "" when not distributed.
        owns_group: whether :func:`setup_distributed` created the process group (and must destroy it).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str = ""
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when available else CPU; "cuda" without a GPU is an error naming the setting."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, local_rank, world_size) from torchrun's environment variables, or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return rank, int(os.environ.get("LOCAL_RANK", rank)), world


def setup_distributed(device: str = "auto") -> DistContext:
    """Join torchrun's process group when there is one, and pick this process's device.

    Args:
        device: "auto", "cpu" or "cuda" (under torchrun, "cuda" means GPU ``LOCAL_RANK``).

    Returns:
        The :class:`DistContext`. An already initialised group (e.g. by a caller) is reused, not owned.
    """
    base = resolve_device(device)
    env = torchrun_env()
    if env is None or env[2] <= 1:
        return DistContext(device=base)
    rank, local_rank, world = env
    if base.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local_rank} has no GPU: only {torch.cuda.device_count()} visible; start torchrun "
                "with --nproc_per_node at most the GPU count"
            )
        torch.cuda.set_device(local_rank)
        base = torch.device("cuda", local_rank)
    backend = "nccl" if base.type == "cuda" else "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistContext(rank, local_rank, world, base, dist.get_backend(), owns)


def cleanup_distributed(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op when not distributed)."""
    if ctx.distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (the tensor itself when not distributed)."""
    if ctx.distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def all_gather(tensor: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """``tensor`` from every process, in rank order (``[tensor]`` when not distributed)."""
    if not ctx.distributed:
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(out, tensor.contiguous())
    return out
