"""A self-contained HTML drift report: one file, no scripts, no network; opens from disk.

Sections: a summary (dataset drift and the share of drifted signals), the window tags, a table
of signals with method, statistic, p-value, threshold rule, verdict and window sizes, the
signals that could not be tested, and per signal the reference and current histograms as inline
SVG (:data:`HISTOGRAM_BINS` equal-width bins over the range of both windows, fewer when the range
is too narrow to hold them, bars are the share
of each window's values). Every piece of text is HTML-escaped, since signal names and tags come
from the monitored traffic, and a Content-Security-Policy forbids scripts and every fetch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from attnkit.htmlkit import (
    escape,
    format_number,
    format_percent,
    format_significant,
    header_row,
    page,
)
from attnkit.monitor.drift import DATASET_DRIFT_SHARE, DriftReport, drift_report, shared_edges

__all__ = ["HISTOGRAM_BINS", "render_drift_report", "write_drift_report"]

HISTOGRAM_BINS = 20  # bars per histogram
_WIDTH, _HEIGHT, _PAD = 520, 170, 36  # SVG size and margin in px
_COLORS = {"reference": "#64748b", "current": "#ea580c"}

_STYLE = """
.drift{color:var(--ak-bad);font-weight:600}.tags code{white-space:pre-wrap}
section{margin:1.5rem 0}svg{display:block;max-width:100%;height:auto}
.key{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
"""
_COLUMNS = (
    "Signal", "Method", "Statistic", "p-value", "Threshold (drift when)", "Verdict",
    "Reference n", "Current n",
)  # fmt: skip


def _number(value: float | None) -> str:
    """A statistic or p-value: four significant digits, as the tests' thresholds read."""
    return format_significant(value, 4)


def _finite(values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _histogram_svg(name: str, reference: np.ndarray, current: np.ndarray) -> str:
    """Side-by-side bars of the two windows' shares on shared equal-width bins."""
    edges = shared_edges(np.concatenate([reference, current]), HISTOGRAM_BINS)  # narrow: fewer
    shares = {
        "reference": np.histogram(reference, edges)[0] / reference.size,
        "current": np.histogram(current, edges)[0] / current.size,
    }
    top = max(float(shares["reference"].max()), float(shares["current"].max()))
    plot_w, plot_h = _WIDTH - 2 * _PAD, _HEIGHT - 2 * _PAD
    bin_w = plot_w / (len(edges) - 1)
    bars = []
    for offset, (window, share) in enumerate(shares.items()):
        for i, value in enumerate(share):
            height = plot_h * value / top
            x = _PAD + i * bin_w + offset * bin_w / 2
            low, high = _number(edges[i]), _number(edges[i + 1])
            label = f"{window}: {format_percent(value, 1)} in [{low}, {high}]"
            bars.append(
                f'<rect x="{x:.1f}" y="{_PAD + plot_h - height:.1f}" width="{bin_w / 2 - 1:.1f}" '
                f'height="{height:.1f}" fill="{_COLORS[window]}"><title>{escape(label)}</title>'
                "</rect>"
            )
    base = _PAD + plot_h
    axis = (
        f'<line x1="{_PAD}" y1="{base}" x2="{_PAD + plot_w}" y2="{base}" stroke="#333"/>'
        f'<text x="{_PAD}" y="{base + 16}" font-size="11">{_number(edges[0])}</text>'
        f'<text x="{_PAD + plot_w}" y="{base + 16}" font-size="11" text-anchor="end">'
        f"{_number(edges[-1])}</text>"
        f'<text x="{_PAD - 4}" y="{_PAD + 4}" font-size="11" text-anchor="end">'
        f"{format_percent(top)}</text>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
        f'width="{_WIDTH}" height="{_HEIGHT}" role="img" '
        f'aria-label="{escape(f"histograms of {name}: reference and current")}">'
        f"{axis}{''.join(bars)}</svg>"
    )


def render_drift_report(
    report: DriftReport,
    reference: Mapping[str, ArrayLike],
    current: Mapping[str, ArrayLike],
    *,
    title: str = "attnkit drift report",
    tags: Mapping[str, str] | None = None,
) -> str:
    """The HTML page of a :class:`~attnkit.monitor.drift.DriftReport`.

    Args:
        report: the drift verdicts, e.g. from :func:`~attnkit.monitor.drift.drift_report`.
        reference: signal name → ``(n,)`` reference values, for the histograms (NaN ignored).
        current: signal name → ``(m,)`` current values.
        title: page title (escaped).
        tags: tags of the compared windows, shown as ``key = value`` (escaped).
    """
    results = report.results
    drifted = sum(result.drifted for result in results.values())
    verdict = "detected" if report.drifted else "not detected"
    summary = (
        f'<p>Dataset drift <strong class="{"drift" if report.drifted else "ok"}">{verdict}'
        f"</strong>: {drifted} of {len(results)} signals drifted (share "
        f"{format_number(report.drifted_share)}; dataset drift when &ge; "
        f"{DATASET_DRIFT_SHARE:g}).</p>"
    )
    tag_items = "".join(
        f"<li><code>{escape(key)}</code> = <code>{escape(value)}</code></li>"
        for key, value in sorted((tags or {}).items())
    )
    tag_list = f'<ul class="tags">{tag_items}</ul>' if tag_items else ""
    rows = []
    for index, (name, result) in enumerate(results.items()):
        css, word = ("drift", "drift") if result.drifted else ("ok", "no drift")
        rows.append(
            f'<tr><td><a href="#signal-{index}">{escape(name)}</a></td><td>{escape(result.method)}'
            f'</td><td class="num">{_number(result.statistic)}</td>'
            f'<td class="num">{_number(result.p_value)}</td><td>{escape(result.rule)}</td>'
            f'<td class="{css}">{word}</td><td class="num">{result.reference_size}</td>'
            f'<td class="num">{result.current_size}</td></tr>'
        )
    table = f"<table><thead>{header_row(_COLUMNS)}</thead><tbody>{''.join(rows)}</tbody></table>"
    skipped = "".join(
        f"<li>{escape(name)}: {escape(reason)}</li>" for name, reason in report.skipped.items()
    )
    skipped = f"<h2>Not tested</h2><ul>{skipped}</ul>" if skipped else ""
    legend = "".join(
        f'<span class="key" style="background:{color}"></span>{window}'
        for window, color in _COLORS.items()
    )
    sections = []
    for index, name in enumerate(results):
        ref, cur = _finite(reference.get(name, [])), _finite(current.get(name, []))
        figure = (
            _histogram_svg(name, ref, cur)
            if ref.size and cur.size
            else "<p>No finite values to plot.</p>"
        )
        sections.append(
            f'<section id="signal-{index}"><h2>{escape(name)}</h2><p>{legend}</p>{figure}</section>'
        )
    body = f"<h1>{escape(title)}</h1>{summary}{tag_list}{table}{skipped}{''.join(sections)}"
    return page(title, body, style=_STYLE, images="'none'")


def write_drift_report(
    path: str | Path,
    reference: Mapping[str, ArrayLike],
    current: Mapping[str, ArrayLike],
    *,
    method: str | None = None,
    title: str = "attnkit drift report",
    tags: Mapping[str, str] | None = None,
) -> DriftReport:
    """Test every signal (:func:`~attnkit.monitor.drift.drift_report`) and write the HTML page."""
    report = drift_report(reference, current, method=method)
    text = render_drift_report(report, reference, current, title=title, tags=tags)
    Path(path).write_text(text, encoding="utf-8")
    return report
