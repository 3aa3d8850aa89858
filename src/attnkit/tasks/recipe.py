"""A recipe: one task ready to train (model, data splits, loss and metrics)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset

__all__ = ["Recipe"]


@dataclass(frozen=True)
class Recipe:
    """Everything a :class:`~attnkit.train.Trainer` needs for one task.

    Recipe functions (:func:`~attnkit.tasks.text_recipe`, :func:`~attnkit.tasks.digits_recipe`,
    ...) return one, so that ``attnkit train <task>`` and the benchmarks can train any task the
    same way::

        recipe = digits_recipe(attention="multihead", seed=0, fraction=0.05)
        result = Trainer(recipe.model, config, loss=recipe.loss, metrics=recipe.metrics).fit(
            recipe.train, recipe.val, recipe.test)
    """

    name: str  # the task's name, e.g. "digits"
    model: nn.Module  # a fresh, untrained model
    train: Dataset  # a batch is whatever the default collate function makes of its items
    val: Dataset  # validation split: early stopping and the train/validation gap
    test: Dataset | None  # held-out split, evaluated once with the restored best weights
    loss: Callable[[nn.Module, Any], Tensor]  # (model, batch) -> scalar loss to minimise
    metrics: Callable[[nn.Module, Any], dict[str, float]] | None  # (model, batch) -> {name: value}
    config: Any  # the model's frozen config dataclass (saved in checkpoints)
