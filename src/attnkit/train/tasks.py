"""The tasks ``attnkit train <task>`` knows: names mapped to recipe functions, loaded lazily."""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnkit.train.recipe import Recipe

__all__ = ["TASKS", "load_recipe", "parse_options"]

TASKS: dict[str, str] = {
    "text": "attnkit.models.text:text_recipe",  # classification with known evidence words
    "dates": "attnkit.models.seq2seq:dates_recipe",  # date normalization, seq2seq
    "mnist": "attnkit.models.vision:mnist_recipe",  # 5,000 MNIST digits, small ViT
    "digits": "attnkit.models.vision:digits_recipe",  # sklearn 8x8 digits, small ViT
    "co2": "attnkit.models.timeseries:co2_recipe",  # Mauna Loa CO2, monthly
    "sunspots": "attnkit.models.timeseries:sunspots_recipe",  # yearly sunspots
    "taylor": "attnkit.models.timeseries:taylor_recipe",  # half-hourly electricity demand
}


def load_recipe(
    task: str,
    attention: str = "soft",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """Build the :class:`Recipe` of ``task`` (a key of :data:`TASKS`).

    Raises:
        ValueError: an unknown task (the message lists the known ones), or what the recipe
            function raises for a bad option.
        ImportError: the task's module is not installed or not written yet.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    module_name, function_name = TASKS[task].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ImportError(
            f"task {task!r} needs {module_name}, which is missing: {error}"
        ) from error
    function = getattr(module, function_name, None)
    if function is None:
        raise ImportError(f"task {task!r}: {module_name} has no {function_name}")
    recipe = function(attention=attention, seed=seed, fraction=fraction, data=data, **options)
    if not isinstance(recipe, Recipe):
        raise TypeError(f"{TASKS[task]} must return a Recipe, got {type(recipe).__name__}")
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
