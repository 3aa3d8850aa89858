"""The demo's index page: one self-contained HTML file that links every step's results.

No scripts, no CDN, inline CSS only; every piece of text is HTML-escaped (step notes carry model
outputs); figures and reports are linked by relative paths, so the folder opens from disk and can
be moved as a whole. Timings are wrapped in ``<span class="time">`` (they are the only thing that
changes between two runs with the same seeds).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from attnkit.demo.result import StepResult, Table
from attnkit.htmlkit import escape, header_row, page

__all__ = ["FILE_LABELS", "render_index"]

_STYLE = """
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid var(--ak-line);
padding-bottom:.3rem}
.ok,.skipped,.failed{font-weight:600}.skipped{color:var(--ak-unsure)}.failed{color:var(--ak-bad)}
.figs{display:flex;flex-wrap:wrap;gap:1rem}
.figs figure{margin:0}.figs img{max-width:34rem;width:100%;border:1px solid var(--ak-line)}
figcaption{font-size:.8rem;color:var(--ak-muted)}
ul.notes li{margin:.3rem 0}.files li{margin:.15rem 0}.time{white-space:nowrap}
"""

FILE_LABELS = {
    "curves.png": "validation curves",
    "weights.png": "pooling weights on one example",
    "attention.png": "where the ViT attends",
    "forecast.png": "forecast with its attention over lags",
    "results.json": "every number (JSON)",
    "tour.json": "every number (JSON)",
    "report.html": "explanation report (HTML)",
    "verdicts.json": "verdicts (JSON)",
    "signals.png": "signals of grounded and ungrounded answers",
    "detector.json": "the fitted Lookback Lens (JSON)",
    "eval.html": "evaluation suite report (HTML)",
    "eval.json": "evaluation suite result (JSON)",
    "prompts.jsonl": "the suite's prompts (JSONL, for attnkit eval)",
    "drift.html": "drift report (HTML)",
    "monitor.db": "the monitor's SQLite database",
    "model": "the testbed model (Hugging Face directory)",
}


def _text(value: object) -> str:
    """Escaped text; ``**bold**`` (used by the steps' notes to mark a loss) becomes <strong>."""
    escaped = escape(value)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


def _time(seconds: float) -> str:
    return f'<span class="time">{seconds:.1f} s</span>'


def _table(table: Table) -> str:
    timing = {table.columns.index(name) for name in table.timing}
    body = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            value = f'<span class="time">{_text(cell)}</span>' if i in timing else _text(cell)
            cells.append(f"<td>{value}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table>{header_row(table.columns)}{''.join(body)}</table>"


def _href(path: str) -> str:
    return escape(quote(path))


def _files(result: StepResult, out: Path) -> tuple[str, str]:
    """The figures (``<img>``) and the list of links, for the files that exist."""
    figures, links = [], []
    for path in result.files:
        target = out / path
        label = FILE_LABELS.get(Path(path).name, Path(path).name)
        if target.is_dir():
            links.append(f"<li><code>{_text(path)}/</code> {_text(label)}</li>")
        elif target.is_file():
            links.append(f'<li><a href="{_href(path)}">{_text(path)}</a> {_text(label)}</li>')
            if target.suffix == ".png":
                figures.append(
                    f'<figure><a href="{_href(path)}"><img src="{_href(path)}" '
                    f'alt="{_text(label)}"></a><figcaption>{_text(label)}</figcaption></figure>'
                )
    figs = f'<div class="figs">{"".join(figures)}</div>' if figures else ""
    files = f'<ul class="files">{"".join(links)}</ul>' if links else ""
    return figs, files


def _section(result: StepResult, out: Path) -> str:
    notes = "".join(f"<li>{_text(note)}</li>" for note in result.notes)
    figures, files = _files(result, out)
    parts = [
        f'<section id="{_text(result.name)}"><h2>{_text(result.title)}</h2>',
        f'<p><span class="{_text(result.status)}">{_text(result.status)}</span> · '
        f"{_time(result.seconds)}</p>",
        f'<ul class="notes">{notes}</ul>' if notes else "",
        _table(result.table) if result.table is not None else "",
        figures,
        files,
        "</section>",
    ]
    return "".join(parts)


def render_index(
    results: Sequence[StepResult],
    out: Path,
    *,
    about: Mapping[str, str] | None = None,
    commands: Sequence[tuple[str, str]] = (),
    seconds: float = 0.0,
) -> str:
    """The index page of a demo run in ``out``.

    Args:
        results: the steps, in the order they ran.
        out: the demo's output folder (links are relative to it; only files that exist are
            linked).
        about: facts about the run (``{"torch": "2.13.0", ...}``), shown under the title.
        commands: ``(what, shell command)`` pairs for the "go further" list.
        seconds: wall time of the whole run.
    """
    facts = " · ".join(f"{_text(k)} {_text(v)}" for k, v in (about or {}).items())
    overview = []
    for result in results:
        first = result.headline or (result.notes[0] if result.notes else "")
        overview.append(
            f'<tr><td><a href="#{_text(result.name)}">{_text(result.title)}</a></td>'
            f'<td class="{_text(result.status)}">{_text(result.status)}</td>'
            f"<td>{_text(first)}</td><td>{_time(result.seconds)}</td></tr>"
        )
    further = "".join(
        f"<li>{_text(what)}: <code>{_text(command)}</code></li>" for what, command in commands
    )
    body = "".join(
        [
            "<h1>attnkit demo</h1>",
            f'<p class="meta">{facts} · total {_time(seconds)}</p>',
            "<p>Every attention mechanism checked against its reference; small attention models "
            "trained on bundled real data beside their no-attention baselines (a baseline that "
            "wins is reported as winning); explanations of a pretrained transformer with "
            "verdicts on which to trust; attention signals and a hallucination detector on an "
            "LLM testbed, logged to a monitor.</p>",
            "<table><tr><th>step</th><th>status</th><th>finding</th><th>time</th></tr>",
            "".join(overview),
            "</table>",
            *(_section(result, out) for result in results),
            f"<h2>Go further</h2><ul>{further}</ul>" if further else "",
        ]
    )
    return page("attnkit demo", body, style=_STYLE, images="'self' file:") + "\n"
