"""The notebook view of an :class:`~attnkit.interpret.Explanation`: its verdicts (with
the number of examples they rest on) and, per example, a token strip per method.

Plain HTML (no script): the verdict table and strips are those of the HTML report
(:mod:`attnkit.interpret.report`), so the notebook and the report read the same; each example is
a ``<details>`` element (the first open), and every strip's token shows its exact score on hover.
"""

from __future__ import annotations

from attnkit.htmlkit import escape, format_significant
from attnkit.interpret.report import _token_strip, _verdict_table
from attnkit.views.kit import View, wrap

__all__ = ["explanation_view"]


def explanation_view(explanation, max_examples: int = 8) -> View:
    """Verdicts and token strips of an explanation (the first ``max_examples`` examples).

    Args:
        explanation: from :func:`attnkit.interpret.explain`.
        max_examples: examples shown (each a collapsible section).
    """
    if max_examples < 1:
        raise ValueError(f"max_examples must be at least 1, got {max_examples}")
    count = len(explanation.tokens)
    parts = [f"<h4>Explanation · {count} examples · {len(explanation.scores)} methods</h4>"]
    if explanation.verdicts:
        parts += [
            f'<p class="meta">Verdicts over n = {count} examples: each method\'s ERASER '
            "comprehensiveness against a random ranking and the reference's "
            "(DeYoung et al. 2020); τ is Kendall's rank agreement with the reference, p its "
            "median p-value.</p>",
            _verdict_table(explanation.verdicts),
            '<p class="meta">p-values of τ: '
            + ", ".join(
                f"{escape(v.method)} {format_significant(v.p_value, 2)}"
                for v in explanation.verdicts
            )
            + "</p>",
        ]
    for example in range(min(count, max_examples)):
        tokens, scores, _ = explanation._example(example)
        predicted = int(explanation.predicted[example])
        parts.append(
            f"<details{' open' if example == 0 else ''}><summary>example {example} · "
            f"class {predicted} · {len(tokens)} tokens</summary>"
        )
        for method, values in scores.items():
            parts += [f"<p><b>{escape(method)}</b></p>", _token_strip(tokens, values)]
        parts.append("</details>")
    if count > max_examples:
        parts.append(f'<p class="meta">… {count - max_examples} more examples not shown.</p>')
    return wrap("explanation", "".join(parts))
