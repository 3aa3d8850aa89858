"""The evaluation report: one self-contained HTML page for a suite result.

No script, font, stylesheet or image is loaded from anywhere: the page opens from disk offline.
It holds the summary of the checks (PASS / WARN / FAIL for the dataset), a row per example with
each check's value and status, and per example the attention view: the context tokens shaded by
how much the answer leaned on them, i.e. the mean over the answer's tokens, layers and heads of
the exact weight each step's query put on the token (recorded during generation, one query row
per step), relative to the example's most-leaned-on token. Every text from the dataset or the
model is escaped.
"""

from __future__ import annotations

from attnkit.htmlkit import (
    WEIGHT,
    escape,
    format_percent,
    format_significant,
    header_row,
    page,
    shade,
    status_badge,
    token_span,
)
from attnkit.llm.suite import SuiteResult

__all__ = ["render"]

_STYLE = """
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}table{width:100%}
section.example{border:1px solid var(--ak-line);border-radius:.4rem;padding:.5rem 1rem;
margin:1rem 0}
.context{white-space:pre-wrap;line-height:1.9}
.legend span{padding:0 .5rem}
"""


def _value(outcome) -> str:
    """A check's value on one example (three significant digits) and its status badge."""
    return f"{format_significant(outcome.value)} {status_badge(outcome.status)}"


def _check_row(check, attributes: str = "") -> str:
    """A check's row: name, condition, status, share of failing examples, counts per status."""
    counts = [
        sum(o.status.value == s for o in check.outcomes) for s in ("PASS", "WARN", "FAIL", "SKIP")
    ]
    return (
        f"<tr{attributes}><td>{escape(check.name)}</td><td>{escape(check.condition)}</td>"
        f"<td>{status_badge(check.status)}</td>"
        f"<td class=num>{format_percent(check.failing)}</td>"
        f"<td class=num>{' / '.join(map(str, counts))}</td></tr>"
    )


def _shade(tokens: list[str], leaned: list[float]) -> str:
    """Context tokens as spans shaded by weight relative to the largest, with exact titles."""
    top = max(leaned, default=0.0)
    spans = []
    for text, weight in zip(tokens, leaned or [0.0] * len(tokens), strict=True):
        alpha = weight / top if top > 0 else 0.0
        spans.append(
            token_span(text, shade(WEIGHT, alpha), f"weight {format_significant(weight, 4)}")
        )
    return "".join(spans)


def render(result: SuiteResult) -> str:
    """The report as one HTML string."""
    checks = result.checks
    settings = ", ".join(f"{escape(str(k))}={escape(str(v))}" for k, v in result.settings.items())
    parts = [
        f"<h1>{escape(result.name)} {status_badge(result.status)}</h1>",
        f'<p class="meta">model {escape(result.model)} · {escape(result.created)} · '
        f"{len(result.examples)} examples · {settings}</p>",
        "<h2>Checks</h2>",
        '<table id="checks">'
        + header_row(
            ["check", "condition", "status", "failing examples", "PASS / WARN / FAIL / SKIP"]
        ),
    ]
    parts += [_check_row(check, ' class="check"') for check in checks]
    parts += [
        "</table>",
        "<h2>Examples</h2>",
        '<table id="examples">' + header_row(["id", "status", "answer", *(c.name for c in checks)]),
    ]
    for i, example in enumerate(result.examples):
        cells = "".join(f"<td class=num>{_value(c.outcomes[i])}</td>" for c in checks)
        parts.append(
            f'<tr class="example"><td><a href="#example-{i}">{escape(example.id)}</a></td>'
            f"<td>{status_badge(result.example_status(i))}</td>"
            f"<td>{escape(example.answer)}</td>{cells}</tr>"
        )
    parts += [
        "</table>",
        "<h2>What each answer leaned on</h2>",
        '<p class="legend">Context tokens shaded by the mean weight the answer put on them '
        "(over its tokens, all layers and heads; exact weights of each step's query), relative "
        "to the example's largest; hover a token for its weight.</p>",
    ]
    for i, example in enumerate(result.examples):
        signals = " · ".join(
            f"{escape(name.replace('_', ' '))} {format_significant(value)}"
            for name, value in example.signals.items()
        )
        expected = (
            "" if example.expected is None else f"<p><b>expected</b> {escape(example.expected)}</p>"
        )
        parts.append(
            f'<section class="example" id="example-{i}"><h3>{escape(example.id)} '
            f"{status_badge(result.example_status(i))}</h3>"
            f'<p class="meta">{example.new_tokens} new tokens · {signals}</p>'
            f'<p><b>context</b></p><div class="context">'
            f"{_shade(example.context_tokens, example.leaned_on)}</div>"
            f'<p><b>answer</b></p><div class="answer">{escape(example.answer)}</div>{expected}'
            f"<details><summary>prompt</summary><pre>{escape(example.prompt)}</pre></details>"
            "</section>"
        )
    title = f"{result.name}: {result.status.value}"
    return page(title, "\n".join(parts), style=_STYLE)
