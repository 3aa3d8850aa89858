"""The notebook view of a :class:`~attnkit.recording.Recording`: a model view and a head view.

- **Model view** (as in bertviz, Vig 2019): every layer × head as a small heatmap, one picture
  (a PNG drawn here, so it shows in a static render too); click a cell to pick that head.
- **Head view**: the picked head's attention as a heatmap on a canvas and the tokens as text;
  hover a token (or a heatmap row) to colour the keys it attends to, click to pin it.

Long inputs stay usable (2,000 tokens × 72 heads fit in ~4 MB): instead of every ``Q × K``
matrix the page gets, per head and query, the ``k`` largest weights (``k`` as large as
``max_bytes`` allows, every key when it fits), quantized to 1/65535, with the weight left outside
them; the model view's heatmaps are average-pooled to at most :data:`THUMB` cells a side.
The view says which ``k`` it shows. A recording without weights shows its statistics (mean over
queries) per layer and head.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from attnkit.htmlkit import escape, format_significant
from attnkit.views.kit import (
    VIRIDIS_JS,
    View,
    colormap,
    encode_array,
    image_data_uri,
    wrap,
)

__all__ = ["THUMB", "recording_view"]

THUMB = 40  # largest side, in cells, of a model-view heatmap
_GAP = 2  # pixels between model-view cells


def recording_view(
    recording,
    tokens: Sequence[str] | None = None,
    query_tokens: Sequence[str] | None = None,
    example: int = 0,
    max_bytes: int = 4_000_000,
) -> View:
    """The interactive view of one example of a recording.

    Args:
        recording: a :class:`~attnkit.recording.Recording` (weights ``{layer: (B, H, Q, K)}``).
        tokens: the ``K`` key tokens as text (default their positions).
        query_tokens: the ``Q`` query tokens, when they are not the last ``Q`` keys (cross
            attention); default ``tokens[K - Q:]``.
        example: which batch row to show.
        max_bytes: budget for the head view's weights (top-``k`` indices and 16-bit weights).

    Returns:
        A :class:`~attnkit.views.kit.View` (displays itself in a notebook; ``.html`` is the
        fragment).
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    weights = recording.weights if recording.want_weights else {}
    if not weights:
        return _stats_view(recording, example)
    layers = list(weights)
    first = weights[layers[0]]
    batch, _, queries, keys = first.shape
    if not 0 <= example < batch:
        raise ValueError(f"example must be in [0, {batch}), got {example}")
    for layer in layers:
        if weights[layer].shape[0] != batch or weights[layer].shape[-2:] != (queries, keys):
            raise ValueError(
                f"every layer must have (B, H, Q, K) with B, Q, K = {batch}, {queries}, {keys}; "
                f"{layer!r} has {tuple(weights[layer].shape)}"
            )
    tokens = _labels(tokens, keys, "tokens")
    if query_tokens is None:
        query_tokens = (
            tokens[keys - queries :] if queries <= keys else [str(i) for i in range(queries)]
        )
    query_tokens = _labels(query_tokens, queries, "query_tokens")
    heads = [int(weights[layer].shape[1]) for layer in layers]
    index_bytes = 2 if keys <= 65_536 else 4
    per_k = sum(heads) * queries * (index_bytes + 2)
    k = int(max(1, min(keys, max_bytes // per_k)))
    index_type = np.uint16 if index_bytes == 2 else np.uint32
    indices, values, rest, thumbs = [], [], [], []
    for layer in layers:
        w = weights[layer][example].detach().float().cpu()  # (H, Q, K)
        top = w.topk(k, dim=-1)  # (H, Q, k) each
        indices.append(top.indices.numpy().astype(index_type).ravel())
        values.append(_quantize(top.values).ravel())
        rest.append(_quantize((w.sum(-1) - top.values.sum(-1)).clamp_min(0)).ravel())
        thumbs.append(_pool(w))
    picture, cell = _model_picture(thumbs, max(heads))
    data = {
        "layers": layers,
        "heads": heads,
        "queries": queries,
        "keys": keys,
        "k": k,
        "indexBytes": index_bytes,
        "idx": encode_array(np.concatenate(indices)),
        "val": encode_array(np.concatenate(values)),
        "rest": encode_array(np.concatenate(rest)),
        "tokens": tokens,
        "queryTokens": query_tokens,
        "selfAttention": queries <= keys and query_tokens == tokens[keys - queries :],
        "cell": cell,
        "gap": _GAP,
    }
    shown = "every key" if k == keys else f"the {k} largest weights of each query (of {keys} keys)"
    body = (
        f"<h4>Recording · {len(layers)} layers &times; {max(heads)} heads · "
        f"{queries} queries &times; {keys} keys · example {example}</h4>"
        '<p class="meta">Model view: each layer (row) &times; head (column), average-pooled; '
        "click a cell to show that head below.</p>"
        f'<img class="map model-view" alt="model view" src="{picture}" '
        f'style="width:{min(900, picture_width(max(heads), cell))}px;max-width:100%">'
        f'<p class="meta">Head view: {shown}, to 1/65535; hover a token or a heatmap row for '
        "the keys that query attends to, click to pin it.</p>"
        '<p class="meta static-note">(The head view needs the notebook\'s JavaScript: a '
        "trusted notebook or an HTML export.)</p>"
        '<div class="head-view"></div>'
    )
    return wrap("recording", body, _SCRIPT.replace('"VIRIDIS"', VIRIDIS_JS), data)


def picture_width(heads: int, cell: int) -> int:
    return heads * (cell + _GAP) + _GAP


def _labels(labels: Sequence[str] | None, count: int, name: str) -> list[str]:
    if labels is None:
        return [str(i) for i in range(count)]
    labels = [str(t) for t in labels]
    if len(labels) != count:
        raise ValueError(f"{name} must have {count} entries (one per position), got {len(labels)}")
    return labels


def _quantize(values: torch.Tensor) -> np.ndarray:
    """Weights in ``[0, 1]`` as ``uint16`` steps of 1/65535."""
    return (values.double().clamp(0, 1) * 65535).round().to(torch.int32).numpy().astype(np.uint16)


def _pool(w: torch.Tensor) -> np.ndarray:
    """``(H, Q, K)`` average-pooled to at most ``THUMB`` a side, each head scaled to its max."""
    size = (min(w.shape[1], THUMB), min(w.shape[2], THUMB))
    pooled = F.adaptive_avg_pool2d(w, size)  # (H, q, k)
    peak = pooled.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (pooled / peak).numpy()


def _model_picture(thumbs: list[np.ndarray], heads: int) -> tuple[str, int]:
    """One PNG: layer rows × head columns of square cells (each heatmap scaled to fill one)."""
    rows, cols = thumbs[0].shape[1:]
    cell = max(24, min(64, 900 // max(1, heads) - _GAP))
    height = len(thumbs) * (cell + _GAP) + _GAP
    image = np.full((height, picture_width(heads, cell), 3), 255, dtype=np.uint8)
    ys = (np.arange(cell) * rows // cell)[:, None]
    xs = (np.arange(cell) * cols // cell)[None, :]
    for layer, heatmaps in enumerate(thumbs):
        for head, heatmap in enumerate(heatmaps):
            top = _GAP + layer * (cell + _GAP)
            left = _GAP + head * (cell + _GAP)
            image[top : top + cell, left : left + cell] = colormap(heatmap[ys, xs])
    return image_data_uri(image), cell


def _stats_view(recording, example: int) -> View:
    stats = recording.stats
    if not stats:
        return wrap(
            "recording",
            "<h4>Recording</h4><p class='meta'>Nothing recorded: capture with weights=True or "
            "stats=(...) to see attention here.</p>",
        )
    parts = [f"<h4>Recording · statistics, mean over queries · example {example}</h4>"]
    for name, by_layer in stats.items():
        parts.append(f"<p><b>{escape(name)}</b></p><table><tr><th>layer</th>")
        heads = max(t.shape[1] for t in by_layer.values())
        parts += [f"<th>head {h}</th>" for h in range(heads)] + ["</tr>"]
        for layer, values in by_layer.items():
            means = values[example].float().mean(-1).tolist()  # (H,)
            cells = "".join(f"<td class='num'>{format_significant(v)}</td>" for v in means)
            parts.append(f"<tr><td>{escape(layer)}</td>{cells}</tr>")
        parts.append("</table>")
    return wrap("recording", "".join(parts))


_SCRIPT = r"""
function(root, d){
  var VIR = "VIRIDIS";
  function color(x){x=Math.max(0,Math.min(1,x))*(VIR.length-1);var i=Math.min(VIR.length-2,
    Math.floor(x)),f=x-i,a=VIR[i],b=VIR[i+1];return [0,1,2].map(function(c){
    return Math.round(a[c]*(1-f)+b[c]*f);});}
  function decode(s, T){var bin=atob(s),u=new Uint8Array(bin.length);
    for(var i=0;i<bin.length;i++)u[i]=bin.charCodeAt(i);return new T(u.buffer);}
  var idx=decode(d.idx, d.indexBytes===2?Uint16Array:Uint32Array), val=decode(d.val,Uint16Array),
      rest=decode(d.rest,Uint16Array), k=d.k, Q=d.queries, K=d.keys;
  var offsets=[0]; d.heads.forEach(function(h,i){offsets.push(offsets[i]+h);});
  var note=root.querySelector('.static-note'); if(note) note.remove();
  var hv=root.querySelector('.head-view');
  var state={layer:d.layers.length-1, head:0, query:null, pinned:false};
  var controls=document.createElement('div'); controls.className='controls';
  var layerSel=document.createElement('select'); layerSel.className='layer';
  d.layers.forEach(function(name,i){var o=document.createElement('option');o.value=i;
    o.textContent=name||'(model)';layerSel.appendChild(o);});
  var headSel=document.createElement('select'); headSel.className='head';
  var label=document.createElement('span'); label.className='selected';
  controls.append('layer ',layerSel,' head ',headSel,label); hv.appendChild(controls);
  var side=Math.min(420, Math.max(Q,K,60));
  var canvas=document.createElement('canvas'); canvas.width=Math.min(K,side);
  canvas.height=Math.min(Q,side); var shown=Math.max(320,side); canvas.style.width=shown+'px';
  canvas.style.height=Math.round(shown*canvas.height/canvas.width)+'px';
  var info=document.createElement('p'); info.className='meta info';
  info.textContent='hover a token or a heatmap row';
  hv.append(canvas, info);
  function strip(labels){var div=document.createElement('div');div.className='tokens scroll';
    var spans=labels.map(function(t,i){var s=document.createElement('span');s.className='tok';
      s.textContent=t;s.dataset.i=i;div.appendChild(s);
      div.appendChild(document.createTextNode(' '));
      return s;});return [div,spans];}
  var keyStrip=strip(d.tokens), keySpans=keyStrip[1], querySpans;
  if(d.selfAttention){querySpans=keySpans.slice(K-Q); hv.appendChild(keyStrip[0]);}
  else{var qs=strip(d.queryTokens); querySpans=qs[1];
    var p1=document.createElement('p');p1.className='meta';p1.textContent='queries';
    var p2=document.createElement('p');p2.className='meta';p2.textContent='keys';
    hv.append(p1,qs[0],p2,keyStrip[0]);}
  function base(){return ((offsets[state.layer]+state.head)*Q)*k;}
  function fillHeads(){headSel.innerHTML='';for(var h=0;h<d.heads[state.layer];h++){
    var o=document.createElement('option');o.value=h;o.textContent=h;headSel.appendChild(o);}}
  function draw(){var w=canvas.width,h=canvas.height,acc=new Float32Array(w*h),peak=0,b=base();
    for(var q=0;q<Q;q++){var y=Math.floor(q*h/Q);for(var j=0;j<k;j++){var v=val[b+q*k+j];
      var x=Math.floor(idx[b+q*k+j]*w/K),p=y*w+x;if(v>acc[p]){acc[p]=v;if(v>peak)peak=v;}}}
    var ctx=canvas.getContext('2d'),img=ctx.createImageData(w,h);
    for(var i=0;i<w*h;i++){var c=color(peak?acc[i]/peak:0);img.data[4*i]=c[0];
      img.data[4*i+1]=c[1];img.data[4*i+2]=c[2];img.data[4*i+3]=255;}
    ctx.putImageData(img,0,0);}
  var lit=[];
  function clear(){lit.forEach(function(s){s.style.background='';s.classList.remove('sel');});
    lit=[];}
  function show(q){clear(); if(q===null){info.textContent='hover a token or a heatmap row';return;}
    var b=base()+q*k, top=0, best=-1, total=0;
    for(var j=0;j<k;j++){var v=val[b+j];total+=v;if(v>top){top=v;best=idx[b+j];}}
    for(var j=0;j<k;j++){var v=val[b+j];if(!v)continue;var s=keySpans[idx[b+j]];
      s.style.background=tokenShade('positive',v/(top||1));lit.push(s);}
    var qs=querySpans[q]; if(qs){qs.classList.add('sel');lit.push(qs);}
    var r=rest[(offsets[state.layer]+state.head)*Q+q];
    info.textContent='query '+q+' "'+d.queryTokens[q]+'": largest weight '+(top/65535).toFixed(4)+
      (best>=0?' on key '+best+' "'+d.tokens[best]+'"':'')+'; weight outside the keys shown '+
      (r/65535).toFixed(4)+(state.pinned?' (pinned: click again to release)':'');}
  function update(){layerSel.value=state.layer; headSel.value=state.head;
    label.textContent=' showing '+(d.layers[state.layer]||'(model)')+' · head '+state.head;
    root.dataset.layer=state.layer; root.dataset.head=state.head; draw(); show(state.query);}
  layerSel.onchange=function(){state.layer=+layerSel.value;fillHeads();
    state.head=Math.min(state.head,d.heads[state.layer]-1);update();};
  headSel.onchange=function(){state.head=+headSel.value;update();};
  function hover(q){if(state.pinned)return;state.query=q;show(q);}
  querySpans.forEach(function(s,q){s.onmouseenter=function(){hover(q);};
    s.onclick=function(){if(state.pinned&&state.query===q){state.pinned=false;}
      else{state.pinned=true;state.query=q;} show(state.query);};});
  canvas.onmousemove=function(e){var r=canvas.getBoundingClientRect();
    hover(Math.min(Q-1,Math.floor((e.clientY-r.top)/r.height*Q)));};
  var pic=root.querySelector('img.model-view');
  pic.style.cursor='pointer';
  pic.onclick=function(e){var r=pic.getBoundingClientRect(),scale=pic.naturalWidth/r.width;
    var x=(e.clientX-r.left)*scale, y=(e.clientY-r.top)*scale, step=d.cell+d.gap;
    var head=Math.floor((x-d.gap/2)/step), layer=Math.floor((y-d.gap/2)/step);
    if(layer<0||layer>=d.layers.length||head<0||head>=d.heads[layer])return;
    state.layer=layer; fillHeads(); state.head=head; update();};
  fillHeads(); update();
}
"""
