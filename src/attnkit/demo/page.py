"""The demo's index page: one self-contained HTML file that links every step's results.

No scripts, no CDN, inline CSS only; every piece of text is HTML-escaped (step notes carry model
outputs); figures and reports are linked by relative paths, so the folder opens from disk and can
be moved as a whole. Timings are wrapped in ``<span class="time">`` (they are the only thing that
changes between two runs with the same seeds).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from attnkit.demo.result import StepResult, Table

__all__ = ["FILE_LABELS", "render_index"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;color:#1f2328;max-width:72rem;padding:0 1rem}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
.meta{color:#57606a}table{border-collapse:collapse;margin:.8rem 0}
td,th{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.ok{color:#1a7f37;font-weight:600}.skipped{color:#9a6700;font-weight:600}
.failed{color:#b42318;font-weight:600}.figs{display:flex;flex-wrap:wrap;gap:1rem}
.figs figure{margin:0}.figs img{max-width:34rem;width:100%;border:1px solid #d0d7de}
figcaption{font-size:.8rem;color:#57606a}code{background:#f6f8fa;padding:.1rem .3rem;
border-radius:.2rem}ul.notes li{margin:.3rem 0}.files li{margin:.15rem 0}.time{white-space:nowrap}
"""
_CSP = "default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'"

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
    escaped = html.escape(str(value), quote=True)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


def _time(seconds: float) -> str:
    return f'<span class="time">{seconds:.1f} s</span>'


def _table(table: Table) -> str:
    timing = {table.columns.index(name) for name in table.timing}
    head = "".join(f"<th>{_text(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            value = f'<span class="time">{_text(cell)}</span>' if i in timing else _text(cell)
            cells.append(f"<td>{value}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _href(path: str) -> str:
    return html.escape(quote(path), quote=True)


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
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>attnkit demo</title><style>{_STYLE}</style></head><body>",
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
            "</body></html>\n",
        ]
    )
