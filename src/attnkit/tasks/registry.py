"""The tasks ``attnkit train <task>`` knows: names mapped to their recipe functions.

Adding a task is one entry: a function ``(attention, seed, fraction, data, **options) ->``
:class:`~attnkit.tasks.Recipe`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attnkit.tasks.dates import dates_recipe
from attnkit.tasks.recipe import Recipe
from attnkit.tasks.series import co2_recipe, sunspots_recipe, taylor_recipe
from attnkit.tasks.text import text_recipe
from attnkit.tasks.vision import digits_recipe, mnist_recipe

__all__ = ["TASKS", "load_recipe", "parse_options"]

TASKS: dict[str, Callable[..., Recipe]] = {
    "text": text_recipe,  # classification with known evidence words
    "dates": dates_recipe,  # date normalization, seq2seq
    "mnist": mnist_recipe,  # 5,000 MNIST digits, small ViT
    "digits": digits_recipe,  # sklearn 8x8 digits, small ViT
    "co2": co2_recipe,  # Mauna Loa CO2, monthly
    "sunspots": sunspots_recipe,  # yearly sunspots
    "taylor": taylor_recipe,  # half-hourly electricity demand
}


def load_recipe(
    task: str,
    attention: str = "soft",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """Build the :class:`~attnkit.tasks.Recipe` of ``task`` (a key of :data:`TASKS`).

    Raises:
        ValueError: an unknown task (the message lists the known ones), or what the recipe
            function raises for a bad option.
        TypeError: the task's function does not return a Recipe.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    function = TASKS[task]
    recipe = function(attention=attention, seed=seed, fraction=fraction, data=data, **options)
    if not isinstance(recipe, Recipe):
        name = getattr(function, "__qualname__", repr(function))
        raise TypeError(f"task {task!r} ({name}) must return a Recipe, got {type(recipe).__name__}")
    return recipe


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["dropout=0.1", "hidden=64", "column=value"]`` -> ``{"dropout": 0.1, ...}``.

    Values are read as JSON where they parse (numbers, ``true``/``false``, lists), else kept as
    strings.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"option must look like KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[key.strip()] = text
    return options
