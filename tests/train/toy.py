"""Small regression and classification tasks shared by the trainer tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 3.0])


def regression(n: int = 256, seed: int = 0, sign: float = 1.0) -> TensorDataset:
    """``y = sign * x @ WEIGHTS + noise`` with ``x`` ~ N(0, I) of size 4."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = sign * x @ WEIGHTS + 0.1 * torch.randn(n, generator=generator)
    return TensorDataset(x, y)


def mse(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x).squeeze(-1), y)


def cross_entropy(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def accuracy(model: nn.Module, batch) -> dict[str, float]:
    x, y = batch
    return {"accuracy": (model(x).argmax(-1) == y).float().mean().item()}


def mlp(hidden: int = 32, inputs: int = 4, outputs: int = 1, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, outputs)
    )
