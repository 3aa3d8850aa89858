"""Every dotted path the docs and docstrings name gives what they say, with no deprecation warning.

Sources: the ``::: attnkit...`` directives of the API pages (mkdocstrings), every backticked
``attnkit.x.y`` in the README and docs (a trailing ``(`` means it is called), and the
``:mod:``/``:class:``/``:func:``/``:meth:``/``:data:`` roles in the sources' docstrings.
Old paths kept for one release (``attnkit._moved``) must warn and give the same object.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import types
import warnings
from pathlib import Path

import pytest

import attnkit
from attnkit import _moved

ROOT = Path(__file__).resolve().parents[1]
DOCS = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
SOURCES = sorted((ROOT / "src" / "attnkit").rglob("*.py"))
OPTIONAL = {"triton"}  # modules a CPU machine may lack: a path that needs one is skipped


def resolve(path: str) -> object:
    """The object ``path`` names, read as Python reads ``a.b.c``: an attribute where the parent
    has one, else the submodule of that name."""
    head, *rest = path.split(".")
    obj = importlib.import_module(head)
    for part in rest:
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        if not inspect.ismodule(obj):
            raise AttributeError(f"{path}: {obj!r} has no attribute {part!r}")
        try:
            obj = importlib.import_module(f"{obj.__name__}.{part}")
        except ModuleNotFoundError as error:
            if error.name in OPTIONAL:
                pytest.skip(f"{path} needs {error.name}")
            raise
    return obj


def _quiet(path: str) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return resolve(path)


def _directives() -> list[str]:
    found = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        found += re.findall(r"^::: (attnkit[\w.]*)$", page.read_text(encoding="utf-8"), re.M)
    return found


def _python_root(name: str) -> bool:
    """Whether ``attnkit.<name>`` is Python (a subpackage or a top-level name), not one of the
    OpenTelemetry attribute names the docs also write as ``attnkit.x.y``."""
    return hasattr(attnkit, name) or (Path(attnkit.__file__).parent / name).is_dir()


def _mentions() -> list[tuple[str, bool]]:
    found = set()
    for page in DOCS:
        text = page.read_text(encoding="utf-8")
        for path, call in re.findall(r"`(attnkit(?:\.\w+)+)(\(?)", text):
            if _python_root(path.split(".")[1]):
                found.add((path, bool(call)))
    return sorted(found)


ROLES = {"mod": inspect.ismodule, "class": inspect.isclass, "func": callable, "meth": callable}


def _roles() -> list[tuple[str, str]]:
    found = set()
    for source in SOURCES:
        text = source.read_text(encoding="utf-8")
        for role, path in re.findall(r":(mod|class|func|meth|data):`~?(attnkit(?:\.\w+)+)`", text):
            found.add((role, path))
    return sorted(found)


@pytest.mark.parametrize("path", _directives())
def test_api_page_directive_imports(path):
    obj = _quiet(path)
    assert inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj), path


@pytest.mark.parametrize(("path", "called"), _mentions())
def test_docs_mention_resolves(path, called):
    obj = _quiet(path)
    if called:
        assert callable(obj) and not isinstance(obj, types.ModuleType), f"{path}( is not callable"


@pytest.mark.parametrize(("role", "path"), _roles())
def test_docstring_reference_resolves(role, path):
    obj = _quiet(path)
    if role in ROLES:
        assert ROLES[role](obj), f":{role}:`{path}` gives {type(obj).__name__}"
        if role != "mod":
            assert not isinstance(obj, types.ModuleType), f":{role}:`{path}` is a module"


def test_the_top_level_names_are_what_the_design_says():
    assert inspect.isfunction(attnkit.capture)
    assert inspect.ismodule(importlib.import_module("attnkit.recording.hooks"))
    llm = importlib.import_module("attnkit.llm")
    interpret = importlib.import_module("attnkit.interpret")
    assert inspect.isfunction(llm.generate) and inspect.isfunction(interpret.explain)
    for name in ("flow", "rollout", "relevance"):
        assert inspect.isfunction(getattr(interpret, name))


def test_no_function_shadows_a_module():
    import pkgutil

    for info in pkgutil.walk_packages(attnkit.__path__, "attnkit."):
        parent, _, child = info.name.rpartition(".")
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as error:
            if error.name in OPTIONAL:
                continue
            raise
        assert getattr(importlib.import_module(parent), child) is module, info.name


@pytest.mark.parametrize("old", sorted(_moved.MODULES))
def test_old_module_path_warns_and_forwards(old, monkeypatch):
    new, function = _moved.MODULES[old]
    target = resolve(new)
    parent, _, child = old.rpartition(".")
    # importing an old path rebinds its parent's attribute: undo that after the test
    monkeypatch.setattr(importlib.import_module(parent), child, target, raising=False)
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=re.escape(old)):
        alias = importlib.import_module(old)
    public = [name for name in getattr(target, "__all__", []) if not name.startswith("_")]
    assert public or not hasattr(target, "__path__"), new
    for name in public:
        assert getattr(alias, name) is getattr(target, name), f"{old}.{name}"
    if function is not None:
        assert getattr(alias, function) is getattr(target, function)
        assert callable(alias)
    monkeypatch.delitem(sys.modules, old)


@pytest.mark.parametrize(("module", "name"), sorted(_moved.NAMES))
def test_old_name_warns_and_gives_the_same_object(module, name):
    home, new = _moved.NAMES[(module, name)]
    with pytest.warns(DeprecationWarning, match=re.escape(f"{module}.{name}")):
        old = getattr(importlib.import_module(module), name)
    assert old is getattr(importlib.import_module(home), new)
