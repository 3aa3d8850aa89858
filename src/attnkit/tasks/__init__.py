"""Task recipes: a task's data, model, no-attention baseline, loss and metrics, ready for
:class:`~attnkit.train.Trainer` (``attnkit train``, the demo and the benchmarks use them).

:data:`TASKS` names every task ``attnkit train <task>`` knows; adding one is one entry there.
This layer sits above :mod:`attnkit.models`, :mod:`attnkit.data` and :mod:`attnkit.train`.
"""

from attnkit.tasks.dates import dates_recipe
from attnkit.tasks.glimpse import evaluate, train_classifier
from attnkit.tasks.recipe import Recipe
from attnkit.tasks.registry import TASKS, load_recipe, parse_options
from attnkit.tasks.series import (
    SERIES_SETTINGS,
    classical_baselines,
    co2_recipe,
    matched_hidden,
    series_recipe,
    sunspots_recipe,
    taylor_recipe,
)
from attnkit.tasks.text import text_recipe
from attnkit.tasks.vision import digits_recipe, image_recipe, matched_cnn, mnist_recipe

__all__ = [
    "SERIES_SETTINGS",
    "TASKS",
    "Recipe",
    "classical_baselines",
    "co2_recipe",
    "dates_recipe",
    "digits_recipe",
    "evaluate",
    "image_recipe",
    "load_recipe",
    "matched_cnn",
    "matched_hidden",
    "mnist_recipe",
    "parse_options",
    "series_recipe",
    "sunspots_recipe",
    "taylor_recipe",
    "text_recipe",
    "train_classifier",
]
