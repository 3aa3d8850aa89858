"""Training: a trainer with early stopping, exact checkpoints, DDP, and an overfitting detector.

``Recipe`` bundles a task (model, splits, loss, metrics); ``Trainer(model, TrainConfig(...),
loss=..., metrics=...).fit(train, val, test)`` trains it and returns a ``TrainResult``.
"""

from attnkit.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from attnkit.train.loop import TrainConfig, Trainer, TrainResult, seed_everything
from attnkit.train.overfit import OverfitCheck, gap_warnings
from attnkit.train.recipe import Recipe

__all__ = [
    "Checkpoint",
    "OverfitCheck",
    "Recipe",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "gap_warnings",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
]
