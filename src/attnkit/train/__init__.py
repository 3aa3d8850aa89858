"""Training: one trainer with early stopping, exact checkpoints, DDP, a warm-up/cosine schedule,
step budgets over datasets or endless batch generators, and an overfitting detector.

``Trainer(model, TrainConfig(...), loss=..., metrics=...).fit(train, val, test)`` trains a model
and returns a ``TrainResult``; the task recipes that feed it live in :mod:`attnkit.tasks`.
"""

from attnkit._moved import moved_name
from attnkit.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from attnkit.train.loop import TrainConfig, Trainer, TrainResult, seed_everything
from attnkit.train.overfit import OverfitCheck, gap_warnings
from attnkit.train.parameters import count_parameters

__all__ = [
    "Checkpoint",
    "OverfitCheck",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "count_parameters",
    "gap_warnings",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
]


def __getattr__(name: str):
    return moved_name(__name__, name)  # Recipe moved to attnkit.tasks
