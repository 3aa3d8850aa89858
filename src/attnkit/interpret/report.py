"""A self-contained HTML report of explanations and their verdicts: one file, no network.

Sections: the verdict table, a token heatmap per explanation method, a layer × head grid of small
attention heatmaps, and a larger view of every head of one layer. Token text is escaped (model
inputs are untrusted). Long inputs stay usable: heatmap images are average-pooled to at most
:data:`MAX_PIXELS` cells a side, and token strips simply wrap. Figures are PNGs embedded as base64;
:func:`save_figures` writes every figure of a report as PNG and SVG files: each head's heatmap
(the grid's cells and the head view) and, as a bar chart, each method's token importance (the
strips).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from attnkit.htmlkit import (
    MISSING,
    NEGATIVE,
    POSITIVE,
    escape,
    format_interval,
    format_number,
    format_percent,
    format_significant,
    header_row,
    page,
    png_data_uri,
    shade,
    token_span,
)
from attnkit.interpret.verdicts import LEVEL, MIN_EXAMPLES, MIN_GAIN, MethodVerdict

__all__ = ["MAX_PIXELS", "attention_figure", "importance_figure", "render_report", "save_figures"]

MAX_PIXELS = 128  # largest side of a pooled attention heatmap

_STYLE = """
.grid{display:grid;gap:4px}.grid img{width:100%;image-rendering:pixelated}
.cell{font-size:.7rem;text-align:center;overflow-wrap:anywhere}
"""


def _pool(matrix: Tensor) -> Tensor:
    """Average-pool a ``(Q, K)`` matrix to at most ``MAX_PIXELS`` a side."""
    rows, cols = matrix.shape
    if max(rows, cols) <= MAX_PIXELS:
        return matrix
    size = (min(rows, MAX_PIXELS), min(cols, MAX_PIXELS))
    return F.adaptive_avg_pool2d(matrix[None, None].float(), size)[0, 0]


def attention_figure(matrix: Tensor, title: str = "", size: float = 1.2):
    """A matplotlib figure of one ``(Q, K)`` attention matrix (pooled when large)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(size, size), dpi=100)
    axes.imshow(_pool(matrix.detach().cpu()).numpy(), cmap="viridis", interpolation="nearest")
    axes.set_axis_off()
    if title:
        axes.set_title(title, fontsize=6)
    figure.tight_layout(pad=0.1)
    return figure


def importance_figure(tokens: Sequence[str], scores: Tensor, title: str = ""):
    """A matplotlib bar chart of one method's ``(N,)`` token importance (red positive, blue
    negative, as in the report's strips); tokens label the axis up to 64 of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = scores.detach().float().cpu().numpy()
    figure, axes = plt.subplots(figsize=(min(12.0, 2.0 + 0.25 * len(values)), 2.5), dpi=100)
    colors = ["#dc2626" if v >= 0 else "#2563eb" for v in values]
    axes.bar(range(len(values)), values, color=colors, width=1.0 if len(values) > 64 else 0.8)
    if len(values) <= 64:
        axes.set_xticks(range(len(values)), list(tokens), rotation=90, fontsize=7)
    else:
        axes.set_xlabel(f"token (of {len(values)})")
    axes.axhline(0.0, color="#444", linewidth=0.5)
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout(pad=0.3)
    return figure


def _png(figure) -> str:
    """The figure as a ``data:image/png`` URI (and closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return png_data_uri(buffer.getvalue())


def _token_strip(tokens: Sequence[str], scores: Tensor) -> str:
    values = scores.detach().float().cpu()
    peak = values.abs().max().item() or 1.0
    spans = []
    for token, value in zip(tokens, values.tolist(), strict=True):
        color = shade(POSITIVE if value >= 0 else NEGATIVE, abs(value) / peak)
        spans.append(token_span(token, color, format_significant(value, 4)))
    return '<div class="tokens">' + " ".join(spans) + "</div>"


def _grid(columns: int) -> str:
    """A grid of equal columns that shrink below their content (long layer names wrap)."""
    return f'<div class="grid" style="grid-template-columns:repeat({columns},minmax(0,1fr))">'


def _mark(verdict: MethodVerdict) -> str:
    css = {"trusted": "ok", "flagged": "no"}.get(verdict.verdict, "unsure")
    return f'<span class="{css}">{escape(verdict.label)}</span>'


def _with_interval(value: str, interval: tuple[float, float], percent: bool = False) -> str:
    return f"{value} {format_interval(interval, percent=percent)}"


def _verdict_table(
    verdicts: Sequence[MethodVerdict], signed_verdicts: Sequence[MethodVerdict] = ()
) -> str:
    signed = {v.method: v for v in signed_verdicts}
    rows = []
    for v in verdicts:
        other = signed.get(v.method)
        signed_cells = (
            ""
            if not signed_verdicts
            else f"<td>{MISSING}</td><td>{MISSING}</td>"
            if other is None
            else f"<td>{_with_interval(format_number(other.tau), other.tau_interval)}</td>"
            f"<td>{_mark(other)}</td>"
        )
        rows.append(
            f"<tr><td>{escape(v.method)}</td><td>{'yes' if v.signed else 'no'}</td>"
            f"<td>{_mark(v)}</td><td>{v.n}</td>"
            f"<td>{_with_interval(format_percent(v.gain), v.gain_interval, True)}</td>"
            f"<td>{_with_interval(format_number(v.tau), v.tau_interval)}</td>{signed_cells}"
            f"<td>{format_number(v.comprehensiveness, 3)}</td>"
            f"<td>{format_number(v.random_comprehensiveness, 3)}</td>"
            f"<td>{format_number(v.sufficiency, 3)}</td></tr>"
        )
    level = f"{LEVEL:.0%}"
    signed_header = [f"τ(signed) [{level}]", "verdict with signed τ"] if signed_verdicts else []
    header = header_row(
        [
            *("method", "signed scores", "verdict", "n", f"gain vs reference [{level}]"),
            *(f"τ(|scores|) [{level}]", *signed_header),
            *("comprehensiveness", "random", "sufficiency"),
        ]
    )
    sentences = "".join(f"<li>{escape(v.sentence)}</li>" for v in verdicts)
    return f"<table>{header}{''.join(rows)}</table><ul class='words'>{sentences}</ul>"


def _example_table(verdicts: Sequence[MethodVerdict], example: int) -> str:
    """This example's own numbers per method: n = 1, so a leaning, never a verdict."""
    rows = []
    for v in verdicts:
        if example >= len(v.examples):
            continue
        e = v.examples[example]
        rows.append(
            f"<tr><td>{escape(v.method)}</td><td>{format_percent(e.gain)}</td>"
            f"<td>{format_number(e.tau)}</td><td>{format_number(e.comprehensiveness, 3)}</td>"
            f"<td>{format_number(e.random_comprehensiveness, 3)}</td>"
            f"<td>{escape(e.leaning)}</td></tr>"
        )
    if not rows:
        return ""
    header = header_row(
        [
            *("method", "gain vs reference", "τ(|scores|)", "comprehensiveness", "random"),
            "leaning (not a verdict)",
        ]
    )
    return f"<table>{header}{''.join(rows)}</table>"


def render_report(
    tokens: Sequence[str],
    explanations: Mapping[str, Tensor],
    verdicts: Sequence[MethodVerdict] = (),
    weights: Mapping[str, Tensor] | None = None,
    head_layer: str | None = None,
    title: str = "attnkit explanation",
    signed_verdicts: Sequence[MethodVerdict] = (),
    example: int | None = None,
) -> str:
    """The report as one HTML string.

    Args:
        tokens: the ``N`` input tokens, as text.
        explanations: ``{method: (N,) importance}``.
        verdicts: from :func:`attnkit.interpret.judge`.
        weights: ``{layer: (H, N, N)}`` attention of one example, for the grid and head view.
        head_layer: the layer to show head by head (default the last).
        signed_verdicts: the same verdicts with signed τ (``judge(..., convention="signed")``),
            shown beside the magnitude ones.
        example: which of the verdicts' examples ``tokens`` is: its own numbers are shown
            beside the pooled verdicts, labelled as one example's (no interval, no verdict).
    """
    for method, scores in explanations.items():
        if scores.shape != (len(tokens),):
            raise ValueError(
                f"explanations[{method!r}] must have one score per token ({len(tokens)}), "
                f"got shape {tuple(scores.shape)}"
            )
    parts = [f"<h1>{escape(title)}</h1>"]
    if verdicts:
        n = verdicts[0].n
        parts += [
            "<h2>Can these explanations be read as importance?</h2>",
            f"<p>Pooled over <b>n={n}</b> text{'s' if n != 1 else ''}, each against "
            f"{escape(verdicts[0].reference)}, with {LEVEL:.0%} bootstrap intervals over the "
            f"texts. A verdict needs at least {MIN_EXAMPLES} texts and intervals that clear gain "
            f"≥ {MIN_GAIN:.0%} and τ &gt; 0. τ(|scores|) ranks magnitudes (Jain &amp; Wallace's "
            "convention); τ(signed) ranks signed scores as they are.</p>",
            _verdict_table(verdicts, signed_verdicts),
        ]
        if example is not None:
            own = _example_table(verdicts, example)
            if own:
                parts += [
                    f"<h3>This text alone (example {example}, n=1)</h3>",
                    "<p>One text has no interval: these numbers show which way it leans, and "
                    "are not a verdict.</p>",
                    own,
                ]
    parts.append(f"<h2>Token importance ({len(tokens)} tokens)</h2>")
    for method, scores in explanations.items():
        parts += [f"<h3>{escape(method)}</h3>", _token_strip(tokens, scores)]
    if weights:
        layers = list(weights)
        heads = next(iter(weights.values())).shape[0]
        parts.append("<h2>Attention by layer and head</h2>")
        parts.append(_grid(heads))
        for layer in layers:
            for head in range(heads):
                image = _png(attention_figure(weights[layer][head]))
                label = escape(f"{layer} · head {head}")
                parts.append(
                    f'<div class="cell"><img alt="{label}" src="{image}"><div>{label}</div></div>'
                )
        parts.append("</div>")
        chosen = head_layer if head_layer is not None else layers[-1]
        if chosen not in weights:
            raise ValueError(f"head_layer must be one of {layers}, got {chosen!r}")
        parts.append(f"<h2>Heads of {escape(chosen)}</h2>")
        parts.append(_grid(4))
        for head in range(heads):
            image = _png(attention_figure(weights[chosen][head], f"head {head}", size=3.0))
            parts.append(f'<img alt="head {head}" src="{image}">')
        parts.append("</div>")
    return page(title, "\n".join(parts), style=_STYLE)


def save_figures(
    weights: Mapping[str, Tensor],
    directory: str | Path,
    explanations: Mapping[str, Tensor] | None = None,
    tokens: Sequence[str] | None = None,
) -> list[Path]:
    """Write every figure of a report as PNG and SVG files and return their paths.

    Args:
        weights: ``{layer: (H, N, N)}``: each head's heatmap as ``<layer>.head<h>.{png,svg}``.
        directory: where to write (created if missing).
        explanations: ``{method: (N,) importance}``: each as ``importance.<method>.{png,svg}``
            (the method's name with every run of other characters than letters, digits, ``.``,
            ``_`` and ``-`` made one ``-``).
        tokens: the ``N`` tokens labelling the importance charts (needed with ``explanations``).
    """
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figures = []
    for layer, matrices in weights.items():
        for head in range(matrices.shape[0]):
            figure = attention_figure(matrices[head], f"{layer} head {head}", size=3.0)
            figures.append((f"{layer or 'model'}.head{head}", figure))
    if explanations:
        if tokens is None:
            raise ValueError("tokens must be given with explanations (they label the charts)")
        for method, scores in explanations.items():
            if scores.shape != (len(tokens),):
                raise ValueError(
                    f"explanations[{method!r}] must have one score per token ({len(tokens)}), "
                    f"got shape {tuple(scores.shape)}"
                )
            name = re.sub(r"[^A-Za-z0-9._-]+", "-", method)
            figures.append((f"importance.{name}", importance_figure(tokens, scores, method)))
    written = []
    for stem, figure in figures:
        for suffix in ("png", "svg"):
            path = directory / f"{stem}.{suffix}"
            figure.savefig(path)
            written.append(path)
        plt.close(figure)
    return written
