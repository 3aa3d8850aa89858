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


def toy_recipe(attention="soft", seed=0, fraction=1.0, data=None, **options):
    """A two-class task in the recipe-function signature, for the CLI tests."""
    from attnkit.tasks import Recipe

    if attention not in ("soft", "none"):
        raise ValueError(f"attention must be one of ['none', 'soft'], got {attention!r}")
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(300, 4, generator=generator)
    y = (x[:, 0] - x[:, 2] > 0).long()
    keep = max(1, round(200 * fraction))
    torch.manual_seed(seed)
    model = mlp(hidden=options.get("hidden", 16), outputs=2)
    return Recipe(
        name="toy",
        model=model,
        train=TensorDataset(x[:keep], y[:keep]),
        val=TensorDataset(x[200:250], y[200:250]),
        test=TensorDataset(x[250:], y[250:]),
        loss=cross_entropy,
        metrics=accuracy,
        config=None,
    )
