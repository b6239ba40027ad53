"""Multi-GPU and multi-node set-up for ``torchrun``: process group, device per rank, reductions.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them (plain ``python train.py``)
everything here degrades to a single process with no process group. NCCL is the backend on GPUs,
Gloo on CPU. The global batch is split evenly over the ranks and DistributedDataParallel averages
the gradients, so a step of N processes equals a step of one process with the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

TIMEOUT = timedelta(hours=2)  # rank 0 may spend long on validation and exports while the others wait


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun``; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA GPU is available")
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    return DistInfo(rank, world, target)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_sum(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise sum over the ranks (float64 on this rank's device, which NCCL requires)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=info.device)
    if info.enabled:
        dist.all_reduce(tensor)
    return tensor.tolist()


def gather_batch(x: torch.Tensor | list | tuple, info: DistInfo):
    """The global batch of ``x`` (a tensor, or a list of deep-supervision outputs), concatenated over
    the ranks. Differentiable: the all-gather's backward sends each rank its outputs' share of the
    gradient, so a loss computed on the global batch (batch Dice) gives, after DDP averages, the
    gradient one process with that batch would."""
    if not info.enabled:
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(gather_batch(t, info) for t in x)
    return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)
