"""The notebook view of a :class:`~attnkit.llm.suite.SuiteResult`: the checks, a row per example
with each check's value and status, and per example (a ``<details>``: click to open) its context
shaded by how much the answer leaned on each token. Plain HTML, built from the same pieces as the
evaluation report (:mod:`attnkit.llm.eval_report`)."""

from __future__ import annotations

from attnkit.htmlkit import escape, header_row, status_badge
from attnkit.llm.eval_report import _check_row, _shade, _value
from attnkit.views.kit import View, wrap

__all__ = ["suite_view"]


def suite_view(result, max_examples: int = 50) -> View:
    """The suite result's tables (the first ``max_examples`` examples)."""
    if max_examples < 1:
        raise ValueError(f"max_examples must be at least 1, got {max_examples}")
    checks = result.checks
    parts = [
        f"<h4>{escape(result.name)} {status_badge(result.status)}</h4>",
        f'<p class="meta">model {escape(result.model)} · {escape(result.created)} · '
        f"n = {len(result.examples)} examples</p>",
        "<table>"
        + header_row(["check", "condition", "status", "failing", "PASS / WARN / FAIL / SKIP"]),
    ]
    parts += [_check_row(check) for check in checks]
    parts += [
        "</table>",
        "<table>" + header_row(["id", "status", "answer", *(c.name for c in checks)]),
    ]
    shown = result.examples[:max_examples]
    for i, example in enumerate(shown):
        cells = "".join(f"<td class=num>{_value(c.outcomes[i])}</td>" for c in checks)
        parts.append(
            f"<tr><td>{escape(example.id)}</td><td>{status_badge(result.example_status(i))}</td>"
            f"<td>{escape(example.answer)}</td>{cells}</tr>"
        )
    parts.append("</table>")
    for i, example in enumerate(shown):
        parts.append(
            f"<details><summary>{escape(example.id)} {status_badge(result.example_status(i))}: "
            "what "
            "the answer leaned on</summary>"
            f'<div class="context">{_shade(example.context_tokens, example.leaned_on)}</div>'
            f'<p class="answer">{escape(example.answer)}</p></details>'
        )
    if len(result.examples) > max_examples:
        parts.append(
            f'<p class="meta">… {len(result.examples) - max_examples} more examples not shown.</p>'
        )
    return wrap("suite", "".join(parts))
