"""Data-parallel training with ``torch.distributed`` (DDP), launched by ``torchrun``.

Every process holds a full copy of the model and trains on its own shard of each epoch's
shuffled order (``DistributedSampler``); DDP averages the gradients across processes before
each optimizer step, so ``N`` processes with batch size ``b`` take the same step as one process
with batch size ``N * b`` (Li et al. 2020, "PyTorch Distributed"). Backend: ``gloo`` on CPU,
``nccl`` on GPU. Launch::

    torchrun --standalone --nproc-per-node 2 $(which attnkit) train digits --epochs 5

The :class:`~attnkit.train.Trainer` notices an initialized process group by itself; only rank 0
shows progress and writes checkpoints, metrics and plots.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "LossModule",
    "all_reduce_mean",
    "init_from_env",
    "is_distributed",
    "local_device",
    "rank_and_world",
    "wrap",
]


def is_distributed() -> bool:
    """Whether a process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` without a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def local_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` under a GPU process group, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default ``nccl`` when CUDA is available, else ``gloo``.

    Returns:
        True when a process group of more than one process is (now) initialized; False when the
        environment has no ``WORLD_SIZE`` above 1 (a plain single-process run).
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return True


def all_reduce_mean(value: float, device: torch.device) -> float:
    """The mean of ``value`` over all processes (``value`` itself without a process group)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


class LossModule(nn.Module):
    """``forward(batch) = loss(model, batch)``: lets DDP wrap any loss callable.

    DDP synchronises gradients only for work done inside its own ``forward``; a recipe's loss
    may call any method of the model, so the trainer wraps this module rather than the model.
    """

    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, Any], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Any) -> Tensor:
        return self.loss(self.model, batch)


def wrap(model: nn.Module, loss: Callable[[nn.Module, Any], Tensor]) -> nn.Module:
    """``LossModule(model, loss)``, inside DDP when a process group is initialized."""
    module = LossModule(model, loss)
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    device = local_device()
    # find_unused_parameters: a variant may leave some parameters out of a step (e.g. a
    # baseline branch); DDP would otherwise wait for their gradients forever
    return DistributedDataParallel(
        module,
        device_ids=[device] if device.type == "cuda" else None,
        find_unused_parameters=True,
    )
