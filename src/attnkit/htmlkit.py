"""The one HTML kit every attnkit page and notebook view is written with (standard library only).

It holds what the pages share, once:

- the stylesheet: CSS variables for the palette (``--ak-*``) and the rules every page uses
  (tables, numbers, verdict colours, PASS/WARN/FAIL badges, token strips); a page adds its own
  rules, written with the variables. Every stylesheet starts with :data:`MARKER`;
- the page shell (:func:`page`): doctype, charset, viewport, a Content-Security-Policy that
  forbids scripts and every fetch, title, inline style. A page opens from disk offline;
- escaping (:func:`escape`: every text from a model, a dataset or the monitored traffic);
- number formatting: fixed decimals (:func:`format_number`), percentages
  (:func:`format_percent`), significant digits (:func:`format_significant`) and intervals
  (:func:`format_interval`). None and NaN show as :data:`MISSING` (``"n/a"``) on every page and in
  every table and sentence; ``-0.00`` is never printed (a value that rounds to zero is ``0.00``);
- inline images (:func:`png_data_uri`: a PNG as a ``data:`` URI) and the status badge;
- shaded tokens (:func:`token_span`, :func:`shade`): a token on a background whose opacity is its
  value, in the palette's token colours (:data:`WEIGHT`, :data:`POSITIVE`, :data:`NEGATIVE`).

The notebook views (:mod:`attnkit.views`) use the same stylesheet scoped under their ``<div>``
(:func:`stylesheet` with ``scope``), so a notebook's own style is left alone.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence

__all__ = [
    "MARKER",
    "MISSING",
    "NEGATIVE",
    "POSITIVE",
    "WEIGHT",
    "escape",
    "format_interval",
    "format_number",
    "format_percent",
    "format_significant",
    "header_row",
    "page",
    "png_data_uri",
    "shade",
    "status_badge",
    "stylesheet",
    "token_span",
]

MISSING = "n/a"  # what a missing value (None, NaN) shows, everywhere
MARKER = "/* attnkit html kit */"  # first line of every stylesheet the kit writes

# the colours of shaded tokens (red, green, blue): a weight on a token; a positive and a
# negative score (relevance, attribution; the lookback ratio in blue)
WEIGHT = (230, 81, 0)
POSITIVE = (220, 38, 38)
NEGATIVE = (37, 99, 235)

# the palette: one place for every colour the pages use
_VARIABLES = (
    "--ak-fg:#1d1d1f;--ak-muted:#555;--ak-line:#d0d7de;--ak-shade:#f4f4f6;"
    "--ak-ok:#1a7f37;--ak-bad:#b42318;--ak-unsure:#9a6700;"
    "--ak-pass:#2e7d32;--ak-warn:#b26a00;--ak-fail:#c62828;--ak-skip:#8a8a8a"
)

# (selector, declarations); ":root" is the page (or the view's <div> when scoped)
_RULES: tuple[tuple[str, str], ...] = (
    (":root", _VARIABLES),
    ("table", "border-collapse:collapse;margin:.5rem 0"),
    (
        "td,th",
        "border:1px solid var(--ak-line);padding:.25rem .5rem;text-align:left;vertical-align:top",
    ),
    ("th", "background:var(--ak-shade)"),
    (".num", "text-align:right;font-variant-numeric:tabular-nums"),
    (".meta", "color:var(--ak-muted);margin:.2rem 0"),
    ("code", "background:var(--ak-shade);padding:.1rem .3rem;border-radius:.2rem"),
    (".ok", "color:var(--ak-ok)"),
    (".no", "color:var(--ak-bad)"),
    (".unsure", "color:var(--ak-unsure)"),
    (".tokens", "line-height:2;margin:.3rem 0 .8rem"),
    (".tok", "padding:.1rem .15rem;border-radius:.2rem;white-space:pre"),
    (".status", "font-weight:600;padding:.05rem .4rem;border-radius:.25rem;color:#fff"),
    (".PASS", "background:var(--ak-pass)"),
    (".WARN", "background:var(--ak-warn)"),
    (".FAIL", "background:var(--ak-fail)"),
    (".SKIP", "background:var(--ak-skip)"),
    (".context span", "border-radius:.2rem"),
    (".answer", "white-space:pre-wrap;background:var(--ak-shade);padding:.2rem .4rem"),
)

_BODY = (
    "font:14px/1.45 system-ui,sans-serif;color:var(--ak-fg);margin:2rem auto;max-width:80rem;"
    "padding:0 1rem"
)


def _scoped(selector: str, scope: str) -> str:
    parts = []
    for one in selector.split(","):
        one = one.strip()
        parts.append(scope if one == ":root" else f"{scope} {one}")
    return ",".join(parts)


def stylesheet(rules: str = "", scope: str = "") -> str:
    """The kit's stylesheet, then a page's own ``rules`` (written with the ``--ak-*`` variables).

    Args:
        rules: the page's own CSS, appended as given.
        scope: a selector every kit rule is put under (a view's ``".attnkit-view"``), so that
            the rules style that element only; ``""`` for a whole page.

    Returns:
        CSS text starting with :data:`MARKER`.
    """
    lines = [MARKER]
    for selector, declarations in _RULES:
        name = _scoped(selector, scope) if scope else selector
        lines.append(f"{name}{{{declarations}}}")
    if not scope:
        lines.append(f"body{{{_BODY}}}")
    if rules:
        lines.append(rules.strip())
    return "\n".join(lines)


def page(
    title: str, body: str, *, style: str = "", images: str = "data:", scripts: bool = False
) -> str:
    """A whole self-contained HTML page.

    Args:
        title: the page title (escaped here).
        body: the page's HTML (already escaped where it holds untrusted text).
        style: the page's own CSS rules, added after the kit's (:func:`stylesheet`).
        images: where images may come from (the policy's ``img-src``): ``"data:"`` for inline
            images (:func:`png_data_uri`), ``"'self' file:"`` for files beside the page.
        scripts: allow the page's own inline scripts (a notebook view's); none by default.

    Returns:
        The page: nothing is fetched (``default-src 'none'``) and, unless ``scripts``, no script
        runs.
    """
    if '"' in images or ";" in images:
        raise ValueError(f"images must be CSP sources without quotes or ';', got {images!r}")
    csp = f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'"
    if scripts:
        csp += "; script-src 'unsafe-inline'"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{stylesheet(style)}</style></head><body>\n"
        f"{body}\n</body></html>"
    )


def escape(value: object) -> str:
    """``str(value)`` safe as HTML text and inside a quoted attribute (``<&"'`` escaped)."""
    return html.escape(str(value), quote=True)


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(float(value))


def format_number(value: float | None, digits: int = 2) -> str:
    """``value`` to ``digits`` decimal places (``-0.004`` -> ``"0.00"``, never ``"-0.00"``);
    :data:`MISSING` for None and NaN; ``inf``/``-inf`` as such."""
    if _missing(value):
        return MISSING
    text = f"{float(value):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_percent(value: float | None, digits: int = 0) -> str:
    """A share as a percentage to ``digits`` places (``0.584`` -> ``"58%"``, ``-0.001`` ->
    ``"0%"``); :data:`MISSING` for None and NaN."""
    if _missing(value):
        return MISSING
    return format_number(100 * float(value), digits) + "%"


def format_significant(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits (``0.012345`` -> ``"0.0123"``, ``-0.0`` ->
    ``"0"``); :data:`MISSING` for None and NaN; ``inf``/``-inf`` as such."""
    if _missing(value):
        return MISSING
    text = f"{float(value):.{digits}g}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_interval(
    interval: Sequence[float | None], *, percent: bool = False, digits: int | None = None
) -> str:
    """An interval as ``"[low, high]"``, each end as :func:`format_percent` (``percent``) or
    :func:`format_number` would show it (``digits``: their default when None)."""
    if len(interval) != 2:
        raise ValueError(f"interval must be (low, high), got {len(interval)} values")
    show = format_percent if percent else format_number
    ends = [show(x) if digits is None else show(x, digits) for x in interval]
    return f"[{ends[0]}, {ends[1]}]"


def header_row(columns: Sequence[str]) -> str:
    """A table's header row: ``<tr><th>column</th>...</tr>`` with every name escaped."""
    return "<tr>" + "".join(f"<th>{escape(column)}</th>" for column in columns) + "</tr>"


def png_data_uri(png: bytes) -> str:
    """A PNG file's bytes as a ``data:image/png;base64,...`` URI, for an inline ``<img>``."""
    if not png.startswith(b"\x89PNG"):
        raise ValueError(f"png must be the bytes of a PNG file, got {png[:8]!r}...")
    return "data:image/png;base64," + base64.b64encode(png).decode()


def shade(color: tuple[int, int, int], alpha: float) -> str:
    """A CSS ``rgba()`` colour: ``color`` at opacity ``alpha``, clipped to [0, 1]."""
    red, green, blue = color
    return f"rgba({red},{green},{blue},{max(0.0, min(1.0, float(alpha))):.3f})"


def token_span(text: str, background: str, title: str, attributes: str = "") -> str:
    """One token as a ``<span class="tok">`` on ``background`` (:func:`shade`), its exact value
    in ``title`` (shown on hover); ``attributes``: more, already escaped (`` data-t="3"``)."""
    return (
        f'<span class="tok"{attributes} style="background:{background}" '
        f'title="{escape(title)}">{escape(text)}</span>'
    )


def status_badge(status: object) -> str:
    """A PASS / WARN / FAIL / SKIP badge (an enum's ``value`` or the text itself)."""
    value = escape(getattr(status, "value", status))
    return f'<span class="status {value}">{value}</span>'
