"""Import paths and names that moved in 0.2, kept working until 0.3 with a DeprecationWarning.

Modules were renamed so that no function shadows the module it lives in (``attnkit.capture`` is
the function; its package is ``attnkit.recording``). An old module path is served by a finder at
the end of ``sys.meta_path``: it is consulted only when no real module has the name, warns, and
hands back the new module. Where the old module's name is also the name of the function it held
(``attnkit.llm.generate``), the old path gives a module that is callable as that function, so that
importing the old path does not break calls of the function through the parent package.

Old names of renamed objects are served by each module's ``__getattr__`` through
:func:`moved_name`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

# old module path -> (new module path, the function the old name also denoted, or None)
MODULES: dict[str, tuple[str, str | None]] = {
    "attnkit.capture": ("attnkit.recording", "capture"),
    "attnkit.capture.dispatch": ("attnkit.recording.dispatch", None),
    "attnkit.capture.hf": ("attnkit.recording.hf", None),
    "attnkit.capture.hooks": ("attnkit.recording.hooks", None),
    "attnkit.capture.intervene": ("attnkit.recording.intervention", "intervene"),
    "attnkit.capture.kernel": ("attnkit.recording.kernel", None),
    "attnkit.capture.recorder": ("attnkit.recording.recorder", None),
    "attnkit.capture.stats": ("attnkit.recording.stats", None),
    "attnkit.capture.triton_stats": ("attnkit.recording.triton_stats", None),
    "attnkit.interpret.explain": ("attnkit.interpret.explanation", "explain"),
    "attnkit.interpret.flow": ("attnkit.interpret.attention_flow", "flow"),
    "attnkit.interpret.relevance": ("attnkit.interpret.relevance_maps", "relevance"),
    "attnkit.interpret.rollout": ("attnkit.interpret.attention_rollout", "rollout"),
    "attnkit.llm.detector": ("attnkit.llm.lookback_lens", None),
    "attnkit.llm.generate": ("attnkit.llm.generation", "generate"),
    "attnkit.train.command": ("attnkit.tasks.command", None),
    "attnkit.train.recipe": ("attnkit.tasks.recipe", None),
    "attnkit.train.tasks": ("attnkit.tasks.registry", None),
}

# (module, old name) -> (module that holds it now, new name)
NAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("attnkit.monitor.otel", "SIGNALS"): ("attnkit.llm.signals", "TOKEN_SIGNALS"),
    ("attnkit.monitor.tables", "SIGNALS"): ("attnkit.llm.signals", "RECORD_SIGNALS"),
    ("attnkit.views.kit", "png_data_uri"): ("attnkit.views.kit", "image_data_uri"),
    ("attnkit.interpret", "save_vocabulary"): ("attnkit.data.text", "save_vocabulary"),
    ("attnkit.interpret.faithfulness", "jensen_shannon"): (
        "attnkit.interpret.faithfulness",
        "js_divergence",
    ),
    ("attnkit.llm.detection", "trace_score"): ("attnkit.llm.detection", "answer_score"),
    ("attnkit.monitor.client", "ROUNDING"): ("attnkit.llm.signals", "ROUNDING"),
    ("attnkit.monitor.drift", "jensen_shannon"): ("attnkit.monitor.drift", "js_distance"),
    ("attnkit.models", "evaluate"): ("attnkit.tasks.glimpse", "evaluate"),
    ("attnkit.models", "train_classifier"): ("attnkit.tasks.glimpse", "train_classifier"),
    ("attnkit.train", "Recipe"): ("attnkit.tasks.recipe", "Recipe"),
    ("attnkit.models.text", "text_recipe"): ("attnkit.tasks.text", "text_recipe"),
    ("attnkit.models.text", "EVIDENCE_OPTIONS"): ("attnkit.tasks.text", "EVIDENCE_OPTIONS"),
    ("attnkit.models.text", "FILE_OPTIONS"): ("attnkit.tasks.text", "FILE_OPTIONS"),
    ("attnkit.models.seq2seq", "dates_recipe"): ("attnkit.tasks.dates", "dates_recipe"),
    ("attnkit.models.vision", "image_recipe"): ("attnkit.tasks.vision", "image_recipe"),
    ("attnkit.models.vision", "mnist_recipe"): ("attnkit.tasks.vision", "mnist_recipe"),
    ("attnkit.models.vision", "digits_recipe"): ("attnkit.tasks.vision", "digits_recipe"),
    ("attnkit.models.vision", "matched_cnn"): ("attnkit.tasks.vision", "matched_cnn"),
    ("attnkit.models.vision", "count_parameters"): ("attnkit.train.parameters", "count_parameters"),
    ("attnkit.models.timeseries", "series_recipe"): ("attnkit.tasks.series", "series_recipe"),
    ("attnkit.models.timeseries", "co2_recipe"): ("attnkit.tasks.series", "co2_recipe"),
    ("attnkit.models.timeseries", "sunspots_recipe"): ("attnkit.tasks.series", "sunspots_recipe"),
    ("attnkit.models.timeseries", "taylor_recipe"): ("attnkit.tasks.series", "taylor_recipe"),
    ("attnkit.models.timeseries", "matched_hidden"): ("attnkit.tasks.series", "matched_hidden"),
    ("attnkit.models.timeseries", "SERIES_SETTINGS"): ("attnkit.tasks.series", "SERIES_SETTINGS"),
    ("attnkit.models.timeseries", "classical_baselines"): (
        "attnkit.tasks.series",
        "classical_baselines",
    ),
    ("attnkit.models.glimpse", "train_classifier"): ("attnkit.tasks.glimpse", "train_classifier"),
    ("attnkit.models.glimpse", "evaluate"): ("attnkit.tasks.glimpse", "evaluate"),
    ("attnkit.llm.testbed", "TrainConfig"): ("attnkit.llm.testbed", "TestbedConfig"),
    ("attnkit.llm.testbed", "Example"): ("attnkit.llm.testbed", "RetrievalQuestion"),
    ("attnkit.interpret.verdicts", "format_number"): ("attnkit.htmlkit", "format_number"),
    ("attnkit.interpret.verdicts", "format_percent"): ("attnkit.htmlkit", "format_percent"),
    ("attnkit.views.kit", "escape"): ("attnkit.htmlkit", "escape"),
}


def _warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in attnkit 0.3; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )


class _Alias(types.ModuleType):
    """An old module path: attributes come from the new module; calling it calls the function
    the old path also named."""

    def __init__(self, name: str, target: types.ModuleType, function: str | None) -> None:
        super().__init__(name, target.__doc__)
        self.__dict__["_target"] = target
        self.__dict__["_function"] = function
        if hasattr(target, "__path__"):
            self.__path__: list[str] = []  # a package: its old submodules come from this finder

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_target"], name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        function = self.__dict__["_function"]
        if function is None:
            raise TypeError(f"module {self.__name__!r} is not callable")
        return getattr(self.__dict__["_target"], function)(*args, **kwargs)


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new, function = MODULES[spec.name]
        _warn(spec.name, new, stacklevel=2)  # the frames above are the import system's
        return _Alias(spec.name, importlib.import_module(new), function)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None):
        if fullname not in MODULES:
            return None
        is_package = any(other.startswith(fullname + ".") for other in MODULES)
        return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=is_package)


def install() -> None:
    """Serve the old module paths (idempotent)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())


def moved_name(module: str, name: str) -> Any:
    """The object an old name of ``module`` now has, with a DeprecationWarning; for a module's
    ``__getattr__``.

    Raises:
        AttributeError: ``name`` was never a name of ``module``.
    """
    if (module, name) not in NAMES:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    home, new = NAMES[(module, name)]
    _warn(f"{module}.{name}", f"{home}.{new}", stacklevel=3)  # the caller of __getattr__
    return getattr(importlib.import_module(home), new)
