"""The floors of docs/architecture.md: no import in src/ runs up (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "attnkit"

# top-level module or package -> its floor (docs/architecture.md)
FLOORS = {
    "_moved": 0,
    "attention": 0,
    "data": 0,
    "htmlkit": 0,
    "recording": 1,
    "train": 1,
    "models": 2,
    "interpret": 3,
    "llm": 3,
    "tasks": 3,
    "views": 4,
    "monitor": 5,
    "demo": 6,
    "cli": 7,
    "__init__": 8,
}
# the display hook: objects below views import it when a notebook shows them (or a page is written)
DISPLAY = ("attnkit.views",)
DISPLAY_METHODS = {"_repr_html_", "report"}


def _imports(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, imported module, enclosing function)`` for every attnkit import of ``path``."""
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef) else function
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("attnkit"):
                found.append((child.lineno, child.module, function))
            elif isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, function) for a in child.names)
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), None)
    return [(line, name, function) for line, name, function in found if name.startswith("attnkit")]


def _floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS[parts[1] if len(parts) > 1 else "__init__"]


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_top_level_module_has_a_floor():
    tops = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in SOURCES}
    assert tops == set(FLOORS), f"give these a floor: {sorted(tops - set(FLOORS))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_runs_up(path):
    own = FLOORS[path.relative_to(SRC).parts[0].removesuffix(".py")]
    upward = [
        f"line {line}: {name}"
        for line, name, function in _imports(path)
        if name != "attnkit"
        and _floor(name) > own
        and not (name.startswith(DISPLAY) and function in DISPLAY_METHODS)
    ]
    assert not upward, f"{path.relative_to(SRC)} imports from a floor above: {upward}"
