"""The notebook view of a :class:`~attnkit.llm.generation.GenerationTrace`: the answer's tokens
coloured by their lookback ratio (Chuang et al. 2024; mean over layers and heads: darker blue, the
token's queries looked more at the context than at the answer so far), and the context tokens
shaded by how much the answer leaned on them (its recorded ``context_weights``: mean over the
answer's tokens). Hover an answer token to shade the context by that token's own weights, click
to pin it. All of this but the hover is plain HTML and shows in a static render.

A trace holds token ids, not text: pass the tokenizer to :func:`trace_view` for the tokens' text
(the trace's own ``_repr_html_`` shows ids).
"""

from __future__ import annotations

from attnkit.htmlkit import (
    NEGATIVE,
    WEIGHT,
    escape,
    format_number,
    format_significant,
    shade,
    token_span,
)
from attnkit.views.kit import View, wrap

__all__ = ["trace_view"]


def _texts(tokenizer, ids: list[int]) -> list[str]:
    if tokenizer is None:
        return [f"#{i}" for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def _mean(signal) -> str:
    """A signal's mean over tokens, layers and heads, to three places."""
    return format_number(float(signal.float().mean()), 3)


def trace_view(trace, tokenizer=None) -> View:
    """The view of one generation trace.

    Args:
        trace: from :func:`attnkit.llm.generate`.
        tokenizer: the model's tokenizer, to show the tokens as text (default their ids).
    """
    ratio = trace.lookback_ratio.float().mean((1, 2)).tolist()  # (n,)
    answer = _texts(tokenizer, trace.new_ids.tolist())
    start, stop = trace.context
    context = _texts(tokenizer, trace.prompt_ids[start:stop].tolist())
    weights = None if trace.context_weights is None else trace.context_weights.float()
    parts = [
        f"<h4>Generation · {len(answer)} new tokens · {len(trace.layers)} layers &times; "
        f"{trace.lookback_ratio.shape[-1]} heads</h4>",
        f'<p class="meta">Mean over tokens, layers and heads: lookback ratio '
        f"{_mean(trace.lookback_ratio)}, entropy {_mean(trace.entropy)}, "
        f"sink {_mean(trace.sink)}, largest weight {_mean(trace.max_weight)}, retrieval hits "
        f"{_mean(trace.retrieval)}.</p>",
        "<p><b>answer</b> (blue: lookback ratio, mean over layers and heads; hover for the "
        "value)</p><div class='tokens answer-tokens'>",
    ]
    for t, (text, value) in enumerate(zip(answer, ratio, strict=True)):
        title = f"lookback ratio {format_number(value, 3)}"
        parts.append(token_span(text, shade(NEGATIVE, value), title, f' data-t="{t}"'))
        parts.append(" ")
    parts.append("</div>")
    if weights is None:
        parts.append(
            '<p class="meta">No context weights in this trace: generate with '
            "context_weights=True to see which context tokens each answer token leaned on.</p>"
            f"<p><b>context</b></p><div class='tokens'>{escape(' '.join(context))}</div>"
        )
        return wrap("trace", "".join(parts))
    mean = weights.mean(0)
    peak = float(mean.max()) or 1.0
    parts.append(
        "<p><b>context</b> (orange: weight the answer put on each token, mean over its tokens, "
        "layers and heads, relative to the largest)</p><div class='tokens context-tokens'>"
    )
    for c, (text, value) in enumerate(zip(context, mean.tolist(), strict=True)):
        title = f"weight {format_significant(value, 4)}"
        parts.append(token_span(text, shade(WEIGHT, value / peak), title, f' data-c="{c}"'))
        parts.append(" ")
    parts.append('</div><p class="meta info">hover an answer token</p>')
    data = {
        "weights": [[round(v, 5) for v in row] for row in weights.tolist()],
        "mean": [round(v, 5) for v in mean.tolist()],
        "answer": answer,
        "context": context,
    }
    return wrap("trace", "".join(parts), _SCRIPT, data)


_SCRIPT = r"""
function(root, d){
  var answer=root.querySelectorAll('.answer-tokens .tok');
  var ctx=root.querySelectorAll('.context-tokens .tok');
  var info=root.querySelector('.info'), pinned=null;
  function shade(row, label){var peak=Math.max.apply(null,row)||1;
    ctx.forEach(function(s,c){s.style.background=tokenShade('weight',row[c]/peak);
      s.title='weight '+row[c].toPrecision(4);});
    var order=row.map(function(v,c){return [v,c];});
    order=order.sort(function(a,b){return b[0]-a[0];}).slice(0,5);
    info.textContent=label+' leaned most on: '+order.map(function(p){
      return '"'+d.context[p[1]]+'" '+p[0].toFixed(3);}).join(', ');}
  function reset(){shade(d.mean,'the whole answer');}
  answer.forEach(function(s,t){
    s.onmouseenter=function(){
      if(pinned===null)shade(d.weights[t],'token '+t+' "'+d.answer[t]+'"');};
    s.onmouseleave=function(){if(pinned===null)reset();};
    s.onclick=function(){answer.forEach(function(a){a.classList.remove('sel');});
      if(pinned===t){pinned=null;reset();return;} pinned=t; s.classList.add('sel');
      shade(d.weights[t],'token '+t+' "'+d.answer[t]+'" (pinned)');};});
  reset();
}
"""
