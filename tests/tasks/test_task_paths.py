"""The tasks layer: the table of tasks holds the recipe functions themselves, ``models`` imports
nothing from ``train`` or ``tasks``, and every path that moved here warns and gives the same
object for one release."""

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

import attnkit
from attnkit import tasks

MODELS = Path(attnkit.__file__).parent / "models"

MOVED_MODULES = {  # old module path -> new module path
    "attnkit.train.recipe": "attnkit.tasks.recipe",
    "attnkit.train.tasks": "attnkit.tasks.registry",
    "attnkit.train.command": "attnkit.tasks.command",
}
MOVED_NAMES = {  # (old module, old name) -> (new module, new name)
    ("attnkit.train", "Recipe"): ("attnkit.tasks", "Recipe"),
    ("attnkit.models", "train_classifier"): ("attnkit.tasks", "train_classifier"),
    ("attnkit.models", "evaluate"): ("attnkit.tasks", "evaluate"),
    ("attnkit.models.text", "text_recipe"): ("attnkit.tasks", "text_recipe"),
    ("attnkit.models.text", "EVIDENCE_OPTIONS"): ("attnkit.tasks.text", "EVIDENCE_OPTIONS"),
    ("attnkit.models.text", "FILE_OPTIONS"): ("attnkit.tasks.text", "FILE_OPTIONS"),
    ("attnkit.models.seq2seq", "dates_recipe"): ("attnkit.tasks", "dates_recipe"),
    ("attnkit.models.vision", "image_recipe"): ("attnkit.tasks", "image_recipe"),
    ("attnkit.models.vision", "mnist_recipe"): ("attnkit.tasks", "mnist_recipe"),
    ("attnkit.models.vision", "digits_recipe"): ("attnkit.tasks", "digits_recipe"),
    ("attnkit.models.vision", "matched_cnn"): ("attnkit.tasks", "matched_cnn"),
    ("attnkit.models.vision", "count_parameters"): ("attnkit.train", "count_parameters"),
    ("attnkit.models.timeseries", "series_recipe"): ("attnkit.tasks", "series_recipe"),
    ("attnkit.models.timeseries", "co2_recipe"): ("attnkit.tasks", "co2_recipe"),
    ("attnkit.models.timeseries", "sunspots_recipe"): ("attnkit.tasks", "sunspots_recipe"),
    ("attnkit.models.timeseries", "taylor_recipe"): ("attnkit.tasks", "taylor_recipe"),
    ("attnkit.models.timeseries", "matched_hidden"): ("attnkit.tasks", "matched_hidden"),
    ("attnkit.models.timeseries", "SERIES_SETTINGS"): ("attnkit.tasks", "SERIES_SETTINGS"),
    ("attnkit.models.timeseries", "classical_baselines"): ("attnkit.tasks", "classical_baselines"),
    ("attnkit.models.glimpse", "train_classifier"): ("attnkit.tasks", "train_classifier"),
    ("attnkit.models.glimpse", "evaluate"): ("attnkit.tasks", "evaluate"),
    ("attnkit.llm.testbed", "TrainConfig"): ("attnkit.llm.testbed", "TestbedConfig"),
    ("attnkit.llm.testbed", "Example"): ("attnkit.llm.testbed", "RetrievalQuestion"),
}


def test_the_task_table_holds_the_recipe_functions():
    assert {
        "text": tasks.text_recipe, "dates": tasks.dates_recipe, "mnist": tasks.mnist_recipe,
        "digits": tasks.digits_recipe, "co2": tasks.co2_recipe,
        "sunspots": tasks.sunspots_recipe, "taylor": tasks.taylor_recipe,
    } == tasks.TASKS  # fmt: skip
    recipe = tasks.load_recipe("co2", attention="none", hidden=8)
    assert isinstance(recipe, tasks.Recipe) and recipe.name == "co2"
    with pytest.raises(ValueError, match="task must be one of"):
        tasks.load_recipe("imagenet")


def test_models_import_nothing_from_train_or_tasks():
    for path in sorted(MODELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("attnkit.train", "attnkit.tasks")), (path.name, name)


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_old_module_path_warns_and_gives_the_new_module(old, monkeypatch):
    new = importlib.import_module(MOVED_MODULES[old])
    parent, _, child = old.rpartition(".")
    monkeypatch.setattr(importlib.import_module(parent), child, new, raising=False)
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=re.escape(old)):
        alias = importlib.import_module(old)
    for name in new.__all__:
        assert getattr(alias, name) is getattr(new, name), f"{old}.{name}"
    monkeypatch.delitem(sys.modules, old)


@pytest.mark.parametrize(("module", "name"), sorted(MOVED_NAMES))
def test_old_name_warns_and_gives_the_same_object(module, name):
    home, new = MOVED_NAMES[(module, name)]
    with pytest.warns(DeprecationWarning, match=re.escape(f"{module}.{name}")):
        old = getattr(importlib.import_module(module), name)
    assert old is getattr(importlib.import_module(home), new)


def test_file_options_are_the_file_readers_defaults():
    from attnkit.tasks.text import FILE_OPTIONS

    assert FILE_OPTIONS == {
        "text_column": "text", "label_column": "label", "split_column": None,
        "val_fraction": 0.1, "test_fraction": 0.1, "min_count": 1, "max_length": 256,
        "lowercase": True,
    }  # fmt: skip
