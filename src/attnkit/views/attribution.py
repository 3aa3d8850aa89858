"""The notebook view of an :class:`~attnkit.llm.attribution.Attribution`: the methods' verdicts
(with ``n`` and 95% intervals), the answer's tokens, and the prompt's tokens shaded by the chosen
method's scores for the chosen answer token (red positive, blue negative, relative to the row's
largest magnitude). Pick a method in the list and hover or click an answer token. Without the
script (a static render) the prompt shows the first method's scores summed over the answer."""

from __future__ import annotations

from attnkit.htmlkit import (
    escape,
    format_number,
    format_percent,
    format_significant,
    header_row,
)
from attnkit.interpret.report import _token_strip
from attnkit.views.kit import View, wrap

__all__ = ["attribution_view"]

_MARK = {
    "trusted": '<span class="ok">trust</span>',
    "flagged": '<span class="no">do not</span>',
    "inconclusive": '<span class="unsure">no verdict</span>',
}


def _verdicts(verdicts) -> str:
    header = header_row(
        [
            *("method", "verdict", "gain vs reference (95% CI)", "comprehensiveness (95% CI)"),
            *("random", "sufficiency (95% CI)", "τ", "n"),
        ]
    )
    rows = [f"<table>{header}"]

    def between(value, interval, show=format_significant) -> str:
        return f"{show(value)} ({show(interval[0])} to {show(interval[1])})"

    for v in verdicts:
        rows.append(
            f"<tr><td>{escape(v.method)}</td><td>{_MARK[v.verdict]}</td>"
            f"<td class=num>{between(v.gain, v.gain_interval, format_percent)}</td>"
            f"<td class=num>{between(v.comprehensiveness, v.comprehensiveness_interval)}</td>"
            f"<td class=num>{format_significant(v.random_comprehensiveness)}</td>"
            f"<td class=num>{between(v.sufficiency, v.sufficiency_interval)}</td>"
            f"<td class=num>{format_number(v.tau)}</td><td class=num>{v.n}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def attribution_view(attribution) -> View:
    """Verdicts, answer tokens and the prompt shaded per method and answer token."""
    methods = list(attribution.scores)
    first = methods[0]
    parts = [
        f"<h4>Attribution · {len(attribution.answer_tokens)} answer tokens · "
        f"{len(attribution.prompt_tokens)} prompt tokens</h4>",
        '<p class="meta">Faithfulness on each answer token\'s probability (ERASER; reference '
        "leave-one-out; intervals: bootstrap over the answer's tokens).</p>",
        _verdicts(attribution.verdicts),
        '<div class="controls">method <select class="method">',
        *(f'<option value="{i}">{escape(m)}</option>' for i, m in enumerate(methods)),
        "</select></div><p><b>answer</b> (hover or click a token)</p><div class='tokens answer'>",
    ]
    for t, (text, p) in enumerate(
        zip(attribution.answer_tokens, attribution.probabilities.tolist(), strict=True)
    ):
        parts.append(
            f'<span class="tok" data-t="{t}" title="probability {format_significant(p, 4)}">'
            f"{escape(text)}</span> "
        )
    parts += [
        "</div>",
        f'<p class="meta info">prompt: {escape(first)}, summed over the answer</p>',
        '<div class="prompt">',
        _token_strip(attribution.prompt_tokens, attribution.scores[first].sum(0)),
        "</div>",
    ]
    data = {
        "methods": methods,
        "scores": [
            [[round(float(v), 7) for v in row] for row in attribution.scores[m].tolist()]
            for m in methods
        ],
        "answer": attribution.answer_tokens,
    }
    return wrap("attribution", "".join(parts), _SCRIPT, data)


_SCRIPT = r"""
function(root, d){
  var select=root.querySelector('select.method'), info=root.querySelector('.info');
  var spans=root.querySelectorAll('.prompt .tok'), answer=root.querySelectorAll('.answer .tok');
  var state={method:0, token:0, pinned:false};
  function show(){var row=d.scores[state.method][state.token], peak=0;
    row.forEach(function(v){peak=Math.max(peak,Math.abs(v));}); peak=peak||1;
    spans.forEach(function(s,i){var v=row[i];
      s.style.background=tokenShade(v>=0?'positive':'negative',Math.abs(v)/peak);
      s.title=v.toPrecision(4);});
    answer.forEach(function(s,t){s.classList.toggle('sel',t===state.token);});
    info.textContent='prompt: '+d.methods[state.method]+' for answer token '+state.token+' "'+
      d.answer[state.token]+'"'+(state.pinned?' (pinned)':'');
    root.dataset.method=state.method; root.dataset.token=state.token;}
  select.onchange=function(){state.method=+select.value;show();};
  answer.forEach(function(s,t){
    s.onmouseenter=function(){if(!state.pinned){state.token=t;show();}};
    s.onclick=function(){state.pinned=!(state.pinned&&state.token===t);state.token=t;show();};});
  show();
}
"""
