"""Per-query attention statistics streamed over key blocks, without the ``Q × K`` matrix.

For weights ``p_ij = softmax_j(s_ij)`` with scores ``s_ij = scale · q_i·k_j + bias_ij`` over the
allowed keys (or, with a logit soft-cap ``c`` as in Gemma 2,
``s_ij = c · tanh(scale · q_i·k_j / c) + bias_ij``: Bello et al. 2017, "Neural Combinatorial
Optimization"; Gemma Team 2024), the statistics of each query ``i`` are:

- ``entropy``: ``-Σ_j p_ij log p_ij``, with ``log p_ij = s_ij - lse_i`` and
  ``lse_i = log Σ_j exp s_ij``;
- ``max``: the largest weight, ``exp(max_j s_ij - lse_i)``;
- ``argmax``: the key holding it;
- ``sink``: the weight on key 0 (Xiao et al. 2024, "attention sinks");
- ``mass:<name>``: ``Σ_{j ∈ span} p_ij`` for a named key span ``[start, stop)``, shared by the
  batch or one range per example (left-padded batches).

No ``Q × K`` matrix is formed (a full ``(Q, K)`` mask passed in is used as it is). Without a
score bias and without autograd, attnkit's own fused kernels (:mod:`attnkit.recording.kernel`:
C++ for float32 on the CPU, Triton on CUDA) compute the output and every statistic in one
flash-attention pass. Elsewhere, or where no kernel can be built:

1. one fused kernel call gives the output and ``lse`` (PyTorch's CPU flash kernel; an online
   softmax over key blocks elsewhere);
2. entropy and span masses come from a second fused call whose values are extra columns
   (Σ_j p_ij (k_j - k̄) gives ``Σ_j p_ij s_ij``; an indicator column per span gives its mass);
3. ``sink`` is ``exp(s_i0 - lse_i)``, one dot product per query;
4. ``max`` and ``argmax`` need one pass over ``BLOCK × BLOCK`` tiles of scores (causal attention
   skips the tiles in the future).

The extra memory is ``O(BLOCK²)`` per head, whatever ``Q`` and ``K`` are. A query with no allowed
key gets zeros. With a score ``bias`` (ALiBi), entropy and span masses are read in the tiled pass;
so are they with a soft-cap when no kernel applies (its output and ``lse`` then come from the online
softmax, as PyTorch's kernels cannot cap scores).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.attention.backends import math_attention, weighted_values
from attnkit.attention.functional import causal_mask, kv_groups, softmax
from attnkit.attention.output import AttentionOutput
from attnkit.recording import kernel

__all__ = [
    "BASIC_STATS",
    "BLOCK",
    "Span",
    "attention_stats",
    "capped_attention",
    "check_stats",
    "checked_stats",
    "stats_from_weights",
]

BLOCK = 256  # side of the score tiles of the statistics pass (measured best of 64..512 here)
BASIC_STATS = ("entropy", "max", "argmax", "sink")
_GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_SPAN = re.compile(r"mass:(.+)")


Span = tuple[int, int] | tuple[Tensor, Tensor]  # one range for all, or per-example ranges


def check_stats(
    stats: Iterable[str], spans: Mapping[str, Span] | None
) -> tuple[tuple[str, ...], dict[str, Span]]:
    """Validate statistic names and spans; ``mass:<name>`` is added for each span.

    A span is ``(start, stop)`` key positions shared by every example, or ``(starts, stops)``,
    two 1-D integer tensors of ``B`` positions, one range per example (left-padded batches).

    Returns:
        ``(names, spans)``: every statistic to compute, and the spans as ``{name: (start, stop)}``
        (ints, or validated int64 tensors on the CPU).
    """
    if isinstance(stats, str):
        stats = (stats,)
    spans = {name: _check_span(name, span) for name, span in dict(spans or {}).items()}
    names = list(stats)
    for name in names:
        match = _SPAN.fullmatch(name)
        if match:
            if match.group(1) not in spans:
                raise ValueError(f"statistic {name!r} needs spans={{{match.group(1)!r}: (a, b)}}")
        elif name not in BASIC_STATS:
            raise ValueError(
                f"stats must be among {list(BASIC_STATS)} or 'mass:<span>', got {name!r}"
            )
    names += [f"mass:{span}" for span in spans if f"mass:{span}" not in names]
    return tuple(dict.fromkeys(names)), spans


class _Ranges(tuple):
    """Validated per-example ``(starts, stops)`` on the CPU, with copies kept per device (a
    generation reads them on every call of every layer)."""

    def on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        copies = self.__dict__.setdefault("copies", {})
        if device not in copies:
            copies[device] = (self[0].to(device), self[1].to(device))
        return copies[device]


def _check_span(name: str, span: object) -> Span:
    if isinstance(span, _Ranges):
        return span
    if isinstance(span, tuple | list) and len(span) == 2:
        start, stop = span
        if isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop:
            return int(start), int(stop)
        if (
            isinstance(start, Tensor)
            and isinstance(stop, Tensor)
            and start.dim() == 1
            and start.shape == stop.shape
            and len(start) > 0
            and not start.is_floating_point()
            and not stop.is_floating_point()
            and bool((start >= 0).all() and (start < stop).all())
        ):
            return _Ranges((start.long().cpu(), stop.long().cpu()))
    raise ValueError(
        f"spans[{name!r}] must be (start, stop) key positions with 0 <= start < stop, or two 1-D "
        f"integer tensors of per-example starts and stops with 0 <= starts < stops, got {span!r}"
    )


def _per_example(spans: Mapping[str, Span]) -> bool:
    return any(isinstance(span[0], Tensor) for span in spans.values())


def _span_indicator(name: str, span: _Ranges, like: Tensor) -> Tensor:
    """``(B, 1, ..., K)``: 1 on each example's keys of a per-example span, in ``like``'s dtype."""
    start, stop = span.on(like.device)
    if len(start) != like.shape[0]:
        raise ValueError(
            f"spans[{name!r}] holds {len(start)} per-example ranges for a batch of {like.shape[0]}"
        )
    positions = torch.arange(like.shape[-1], device=like.device)
    inside = (positions >= start[:, None]) & (positions < stop[:, None])  # (B, K)
    return inside.view(len(start), *([1] * (like.dim() - 2)), -1).to(like.dtype)


def _has_key(
    mask: Tensor | None, causal: bool, num_queries: int, num_keys: int, shape: torch.Size
) -> Tensor:
    """``(B, H, Q)``: whether each query may attend to at least one key."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool)
    if not causal:
        return mask.any(-1).expand(shape)
    if mask.shape[-2] == 1:  # a key mask: the first allowed key must not be in the future
        first = torch.where(mask.any(-1), mask.to(torch.int8).argmax(-1), num_keys)  # (B, H, 1)
        query_pos = torch.arange(num_keys - num_queries, num_keys, device=mask.device)
        return (first <= query_pos).expand(shape)
    tri = causal_mask(num_queries, num_keys, device=mask.device)
    return (mask & tri).any(-1).expand(shape)


def capped_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    softcap: float | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> AttentionOutput:
    """Reference attention with soft-capped scores, written out in full.

    ``softmax(c · tanh(scale · q kᵀ / c) + bias, mask) v`` (Gemma 2's ``attn_logit_softcapping``;
    Bello et al. 2017); with ``softcap=None`` it is
    :func:`attnkit.attention.backends.math_attention`.
    Shapes as there: query ``(B, H, Q, D)``, key ``(B, Hkv, K, D)``, value ``(B, Hkv, K, Dv)``;
    weights ``(B, H, Q, K)``; causal masking aligned bottom-right.
    """
    kwargs = {"mask": mask, "bias": bias, "causal": causal, "scale": scale}
    if softcap is None:
        return math_attention(
            query, key, value, dropout_p=dropout_p, need_weights=need_weights, **kwargs
        )
    group = kv_groups(query, key)
    batch, heads, num_queries, _ = query.shape
    kv_heads, num_keys = key.shape[1], key.shape[-2]
    grouped = query.reshape(batch, kv_heads, group * num_queries, -1)  # (B, Hkv, G·Q, D)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = (grouped @ key.transpose(-1, -2)) * scale  # (B, Hkv, G·Q, K)
    scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(batch, heads, num_queries, num_keys)  # (B, H, Q, K)
    if bias is not None:
        scores = scores + bias
    if causal:
        tri = causal_mask(num_queries, num_keys, device=query.device)
        mask = tri if mask is None else mask & tri
    weights = softmax(scores, mask)
    attended = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return AttentionOutput(weighted_values(attended, value), weights if need_weights else None)


def _fused(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float,
    softcap: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Attention output ``(B, H, Q, Dv)`` and score log-sum-exp ``(B, H, Q)``; equal heads."""
    num_queries, num_keys = query.shape[-2], key.shape[-2]
    if query.device.type != "cpu" or softcap is not None:
        return _online(query, key, value, mask, bias, causal, scale, softcap)
    is_causal = causal and num_queries == num_keys
    allowed = mask
    if causal and 1 < num_queries < num_keys:  # a chunk after a cache: the mask is (Q, K)
        tri = causal_mask(num_queries, num_keys, device=query.device)
        allowed = tri if allowed is None else allowed & tri
    additive = bias
    if allowed is not None:
        blocked = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device)
        blocked = blocked.masked_fill(~allowed, -math.inf)
        additive = blocked if bias is None else bias + blocked
    if additive is not None and additive.dim() < 4:
        additive = additive.reshape(*([1] * (4 - additive.dim())), *additive.shape)
    value_width = value.shape[-1]
    width = max(query.shape[-1], value_width)  # the kernel wants one head size: pad with zeros
    query, key, value = (F.pad(x, (0, width - x.shape[-1])) for x in (query, key, value))
    kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
    output, lse = kernel(query, key, value, 0.0, is_causal, attn_mask=additive, scale=scale)
    return output[..., :value_width], lse


def _online(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float,
    softcap: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``_fused`` as an online softmax over key blocks (Milakov & Gimelshein 2018)."""
    running_max = query.new_full(query.shape[:-1], -math.inf)
    total = query.new_zeros(query.shape[:-1])
    output = query.new_zeros(*query.shape[:-1], value.shape[-1])
    everything = slice(0, query.shape[-2])
    for start in range(0, key.shape[-2], BLOCK):
        cols = slice(start, min(start + BLOCK, key.shape[-2]))
        scores = _tile_scores(
            query, key, mask, bias, causal, scale, everything, cols, None, softcap
        )
        new_max = torch.maximum(running_max, scores.amax(-1))
        safe_max = torch.where(new_max.isfinite(), new_max, 0.0)
        rescale = torch.exp(running_max - safe_max)
        weights = torch.exp(scores - safe_max.unsqueeze(-1))  # (B, H, Q, C)
        total = total * rescale + weights.sum(-1)
        output = output * rescale.unsqueeze(-1) + weights @ value[..., start : start + BLOCK, :]
        running_max = new_max
    output = output / total.clamp_min(torch.finfo(total.dtype).tiny).unsqueeze(-1)
    return output, running_max + total.log()


def _tiles(num_queries: int, num_keys: int, causal: bool) -> Iterator[tuple[slice, slice]]:
    """``(query rows, key columns)`` tiles of :data:`BLOCK`; causal skips tiles in the future."""
    offset = num_keys - num_queries  # query i sits at key position offset + i
    for q0 in range(0, num_queries, BLOCK):
        q1 = min(q0 + BLOCK, num_queries)
        for k0 in range(0, num_keys, BLOCK):
            if causal and k0 > offset + q1 - 1:
                break
            yield slice(q0, q1), slice(k0, min(k0 + BLOCK, num_keys))


def _tile_scores(
    query: Tensor,
    key: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float,
    rows: slice,
    cols: slice,
    out: Tensor | None = None,
    softcap: float | None = None,
) -> Tensor:
    """Scores ``(B, H, rows, cols)``, -inf where a query may not attend; soft-capped (before the
    bias) when ``softcap`` is given.

    ``out``, a buffer of the tile's shape, is written in place when given (no autograd): reusing
    one buffer saves the page faults of a fresh allocation per tile (about a third of the pass).
    """
    tile_query, tile_key = query[..., rows, :], key[..., cols, :].transpose(-1, -2)
    if out is not None and out.shape[-2:] == (tile_query.shape[-2], tile_key.shape[-1]):
        scores = torch.matmul(tile_query, tile_key, out=out)
    else:
        scores = tile_query @ tile_key
    if scale != 1.0:
        scores = scores.mul_(scale)
    if softcap is not None:
        scores = scores.div_(softcap).tanh_().mul_(softcap)
    if bias is not None:
        scores = scores.add_(_tile(bias, rows, cols))
    if mask is not None:
        scores = scores.masked_fill_(~_tile(mask, rows, cols), -math.inf)
    offset = key.shape[-2] - query.shape[-2]
    if causal and cols.stop - 1 > offset + rows.start:  # the tile crosses the diagonal
        query_pos = torch.arange(offset + rows.start, offset + rows.stop, device=query.device)
        key_pos = torch.arange(cols.start, cols.stop, device=query.device)
        scores = scores.masked_fill_(key_pos[None, :] > query_pos[:, None], -math.inf)
    return scores


def _tile(x: Tensor, rows: slice, cols: slice) -> Tensor:
    """A tile of a mask or bias that may be broadcast along the query axis."""
    return (x if x.shape[-2] == 1 else x[..., rows, :])[..., cols]


def attention_stats(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    stats: Iterable[str] = ("entropy",),
    spans: Mapping[str, Span] | None = None,
    softcap: float | None = None,
) -> AttentionOutput:
    """Softmax attention and per-query statistics of its weights, without the ``Q × K`` matrix.

    Args:
        query: ``(B, H, Q, D)``.
        key: ``(B, Hkv, K, D)``, ``H`` a multiple of ``Hkv``.
        value: ``(B, Hkv, K, Dv)``.
        mask: boolean, broadcastable to ``(B, H, Q, K)``; ``True`` = may attend.
        bias: float, broadcastable to ``(B, H, Q, K)``, added to the scores.
        causal: causal masking aligned bottom-right (queries are the last ``Q`` positions).
        scale: score scale; ``None`` means ``D ** -0.5``.
        stats: names among ``entropy``, ``max``, ``argmax``, ``sink`` and ``mass:<span>``.
        spans: ``{name: (start, stop)}`` key ranges; each adds ``mass:<name>``. A range per
            example, ``(starts, stops)`` as ``(B,)`` tensors, is exact on every path; beyond one
            tile it runs the examples one at a time.
        softcap: logit soft-cap ``c``: scores ``c · tanh(scale · q·k / c)`` before the bias and
            the mask (Gemma 2); ``None`` for none.

    Returns:
        ``AttentionOutput(output (B, H, Q, Dv), stats={name: (B, H, Q)})``; ``argmax`` is
        ``int64``; the rest are float32 for half-precision inputs (one tile or the fused GPU
        kernel; the fallback path keeps the query's dtype), else in the query's dtype.
    """
    names, spans = check_stats(stats, spans)
    if softcap is not None and not (isinstance(softcap, int | float) and softcap > 0):
        raise ValueError(f"softcap must be a positive number or None, got {softcap!r}")
    return _stats(query, key, value, mask, bias, causal, scale, names, spans, softcap)


def checked_stats(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float | None,
    names: tuple[str, ...],
    spans: Mapping[str, Span],
    softcap: float | None,
) -> AttentionOutput:
    """:func:`attention_stats` for names and spans that :func:`check_stats` returned.

    The per-call path of capture (once per layer and decoding step), which validated them when
    the block opened. On the CPU, float32 without a score bias, every size (a decoding step's
    single query too) is one call of the fused kernel, spans shared or per example: for one
    query row that one call costs less than the plain tile's dozen small operations.
    """
    if (
        bias is None
        and query.dtype is torch.float32
        and key.dtype is torch.float32
        and value.dtype is torch.float32
        and query.is_cpu
        and key.is_cpu
        and value.is_cpu
        and not (
            torch.is_grad_enabled()
            and (query.requires_grad or key.requires_grad or value.requires_grad)
        )
        and kernel.is_available("cpu")
    ):  # as _kernel_applies, written out: this runs for every layer at every decoding step
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        if mask is not None and mask.dim() < 4:
            mask = mask.reshape(*([1] * (4 - mask.dim())), *mask.shape)
        return _kernel_stats(query, key, value, mask, causal, scale, names, spans, softcap)
    return _stats(query, key, value, mask, bias, causal, scale, names, spans, softcap)


def _stats(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float | None,
    names: tuple[str, ...],
    spans: Mapping[str, Span],
    softcap: float | None,
) -> AttentionOutput:
    """:func:`attention_stats` after its checks: one plain tile, or streamed over key blocks."""
    output_dtype = query.dtype
    if query.shape[-2] * key.shape[-2] <= BLOCK * BLOCK:
        # small enough to be one tile (a decoding step, say): the weights cost no more memory
        # than the tiled pass would, and one plain computation beats several kernel calls;
        # half-precision inputs are computed in float32, as the fused kernels do
        work = torch.promote_types(query.dtype, torch.float32)
        query, key, value = (x.to(work) for x in (query, key, value))
        bias = None if bias is None else bias.to(work)
        reference = capped_attention(
            query, key, value, mask=mask, bias=bias, causal=causal, scale=scale, softcap=softcap,
            need_weights=True,
        )  # fmt: skip
        stats = _read_weights(reference.weights, names, spans)
        return AttentionOutput(reference.output.to(output_dtype), stats=stats)
    if _per_example(spans):
        return _by_example(query, key, value, mask, bias, causal, scale, names, spans, softcap)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    if mask is not None and mask.dim() < 4:
        mask = mask.reshape(*([1] * (4 - mask.dim())), *mask.shape)
    if _kernel_applies(query, key, value, bias):
        return _kernel_stats(query, key, value, mask, causal, scale, names, spans, softcap)
    group = kv_groups(query, key)
    if group > 1:
        key = key.repeat_interleave(group, dim=1)  # (B, H, K, D)
        value = value.repeat_interleave(group, dim=1)  # (B, H, K, Dv)
    num_queries, num_keys = query.shape[-2], key.shape[-2]
    output, lse = _fused(query, key, value, mask, bias, causal, scale, softcap)
    has_key = _has_key(mask, causal, num_queries, num_keys, lse.shape).to(lse.device)
    lse = torch.where(has_key, lse, math.inf)  # exp(s - inf) = 0 for queries with no key
    span_names = [name for name in names if name.startswith("mass:")]
    result: dict[str, Tensor] = {}

    direct = bias is None and softcap is None  # Σ p s read through a fused call
    if direct and ("entropy" in names or span_names):
        # Σ_j p_ij s_ij = scale · q_i · (k̄ + Σ_j p_ij (k_j - k̄)): centred keys keep it precise.
        center = key.mean(dim=-2, keepdim=True)  # (B, H, 1, D)
        columns = [key - center] if "entropy" in names else []
        positions = torch.arange(num_keys, device=key.device)
        for name in span_names:
            lo, hi = spans[name.removeprefix("mass:")]
            inside = ((positions >= lo) & (positions < hi)).to(key.dtype)  # (K,)
            columns.append(inside.expand(*key.shape[:-1]).unsqueeze(-1))
        extra = torch.cat(columns, dim=-1)  # (B, H, K, n)
        read, _ = _fused(query, key, extra, mask, None, causal, scale)
        if "entropy" in names:
            centred = read[..., : key.shape[-1]]
            expected_score = scale * (query * (centred + center)).sum(-1)
            result["entropy"] = torch.where(has_key, lse - expected_score, 0.0)
        for i, name in enumerate(span_names):
            result[name] = read[..., -len(span_names) + i]

    need_max = "max" in names or "argmax" in names
    blocked_weights = not direct and ("entropy" in names or span_names)
    if need_max or blocked_weights:
        best = torch.full_like(lse, -math.inf)
        best_index = torch.zeros(lse.shape, dtype=torch.long, device=lse.device)
        entropy = torch.zeros_like(lse)
        masses = {name: torch.zeros_like(lse) for name in span_names}
        scaled = query * scale  # once, rather than on every tile
        differentiable = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad)
        buffer = None if differentiable else query.new_empty(*query.shape[:-2], BLOCK, BLOCK)
        for rows, cols in _tiles(num_queries, num_keys, causal):
            scores = _tile_scores(scaled, key, mask, bias, causal, 1.0, rows, cols, buffer, softcap)
            if "argmax" in names:
                tile_best, tile_index = scores.max(-1)
                better = tile_best > best[..., rows]
                best[..., rows] = torch.where(better, tile_best, best[..., rows])
                best_index[..., rows] = torch.where(
                    better, tile_index + cols.start, best_index[..., rows]
                )
            elif need_max:
                best[..., rows] = torch.maximum(best[..., rows], scores.amax(-1))
            if blocked_weights:
                log_weights = scores - lse[..., rows].unsqueeze(-1)  # -inf where masked
                weights = torch.exp(log_weights)  # (B, H, rows, cols)
                finite = torch.where(weights > 0, log_weights, 0.0)
                entropy[..., rows] -= (weights * finite).sum(-1)
                for name in span_names:
                    lo, hi = spans[name.removeprefix("mass:")]
                    lo, hi = max(lo, cols.start), min(hi, cols.stop)
                    if lo < hi:
                        inside = weights[..., lo - cols.start : hi - cols.start]
                        masses[name][..., rows] += inside.sum(-1)
        if blocked_weights:
            result.update(masses)
            if "entropy" in names:
                result["entropy"] = entropy
        if "max" in names:
            result["max"] = torch.exp(best - lse)
        if "argmax" in names:
            result["argmax"] = best_index

    if "sink" in names:
        first_score = (query @ key[..., :1, :].transpose(-1, -2)).squeeze(-1) * scale  # (B, H, Q)
        if softcap is not None:
            first_score = torch.tanh(first_score / softcap) * softcap
        if bias is not None:
            first_score = first_score + bias[..., 0].expand(first_score.shape)
        sink = torch.exp(first_score - lse)
        if mask is not None:
            sink = sink * mask[..., 0].expand(sink.shape)
        result["sink"] = sink  # key 0 is never in a query's causal future
    return AttentionOutput(output, stats={name: result[name] for name in names})


def _by_example(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float | None,
    names: tuple[str, ...],
    spans: Mapping[str, Span],
    softcap: float | None = None,
) -> AttentionOutput:
    """:func:`attention_stats` one example at a time, each with its own span ranges."""
    for name, span in spans.items():
        if isinstance(span[0], Tensor) and len(span[0]) != query.shape[0]:
            raise ValueError(
                f"spans[{name!r}] holds {len(span[0])} per-example ranges for a batch of "
                f"{query.shape[0]}"
            )

    def pick(x: Tensor | None, b: int) -> Tensor | None:  # a batch axis only on 4-D masks
        return x if x is None or x.dim() < 4 or x.shape[0] == 1 else x[b : b + 1]

    outputs, stats = [], []
    for b in range(query.shape[0]):
        own = {
            name: (int(span[0][b]), int(span[1][b])) if isinstance(span[0], Tensor) else span
            for name, span in spans.items()
        }
        one = attention_stats(
            query[b : b + 1],
            key[b : b + 1],
            value[b : b + 1],
            mask=pick(mask, b),
            bias=pick(bias, b),
            causal=causal,
            scale=scale,
            stats=names,
            spans=own,
            softcap=softcap,
        )
        outputs.append(one.output)
        stats.append(one.stats)
    joined = {name: torch.cat([s[name] for s in stats]) for name in names}
    return AttentionOutput(torch.cat(outputs), stats=joined)


def _kernel_applies(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None) -> bool:
    inputs = (query, key, value)
    dtypes = (torch.float32,) if query.device.type == "cpu" else _GPU_DTYPES
    return (
        bias is None
        and all(x.device == query.device and x.dtype == query.dtype for x in inputs)
        and query.dtype in dtypes
        and not (torch.is_grad_enabled() and any(x.requires_grad for x in inputs))
        and kernel.is_available(query.device)
    )


def _kernel_stats(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    causal: bool,
    scale: float,
    names: tuple[str, ...],
    spans: Mapping[str, Span],
    softcap: float | None = None,
) -> AttentionOutput:
    """Every statistic from one pass of :func:`attnkit.recording.kernel.flash_stats`.

    Per-example spans (``(starts, stops)`` tensors) go to the CPU kernel as one ``(S, B, 2)``
    table of each example's ranges.
    """
    span_names = _SPAN_NAMES.get(names)
    if span_names is None:
        span_names = _SPAN_NAMES[names] = [name for name in names if name[:5] == "mass:"]
    ranges = [spans[name[5:]] for name in span_names]
    if "sink" in names:
        ranges.append((0, 1))  # the weight on key 0 is the mass of the span [0, 1)
    extra = {} if softcap is None else {"softcap": softcap}
    for start, _ in ranges:
        if isinstance(start, Tensor):
            extra["example_spans"] = _span_table(span_names, ranges, query.shape[0])
            ranges = []
            break
    output, _, entropy, largest, best_index, masses = kernel.flash_stats(
        query, key, value, mask, causal, scale, ranges, "argmax" in names, **extra
    )
    result = {"entropy": entropy, "max": largest, "argmax": best_index}
    if masses:
        result.update(zip(span_names, masses, strict=False))
        if "sink" in names:
            result["sink"] = masses[-1]
    if query.dtype is torch.float32:
        return AttentionOutput(output, stats={name: result[name] for name in names})
    dtype = torch.promote_types(query.dtype, torch.float32)  # half inputs: float32 statistics
    stats = {name: result[name] if name == "argmax" else result[name].to(dtype) for name in names}
    return AttentionOutput(output, stats=stats)


_SPAN_NAMES: dict[tuple[str, ...], list[str]] = {}  # the mass:<span> names among the names
_TABLES: dict[tuple, tuple[list, Tensor]] = {}  # span table per span objects and batch size


def _span_table(span_names: list[str], ranges: list[Span], batch: int) -> Tensor:
    """``(S, B, 2)`` int64: each example's ``[start, stop)`` of every span, for the CPU kernel.

    Built once per set of span objects and kept (a generation asks for the same table on every
    call of every layer); the spans themselves are held with it, so their ids stay theirs.
    """
    key = (batch, *(id(x) if isinstance(x, Tensor) else x for span in ranges for x in span))
    if key in _TABLES:
        return _TABLES[key][1]
    for name, (start, _) in zip(span_names, ranges, strict=False):
        if isinstance(start, Tensor) and len(start) != batch:
            raise ValueError(
                f"spans[{name[5:]!r}] holds {len(start)} per-example ranges for a batch of {batch}"
            )
    rows = [
        torch.stack([start.long().cpu(), stop.long().cpu()], -1)
        if isinstance(start, Tensor)
        else torch.tensor([[start, stop]]).expand(batch, 2)
        for start, stop in ranges
    ]
    table = torch.stack(rows).contiguous()  # (S, B, 2)
    if len(_TABLES) >= 64:
        _TABLES.pop(next(iter(_TABLES)))
    _TABLES[key] = (ranges, table)
    return table


def stats_from_weights(
    weights: Tensor, stats: Iterable[str], spans: Mapping[str, Span] | None = None
) -> dict[str, Tensor]:
    """The same statistics read off materialized weights ``(B, H, Q, K)`` (the reference)."""
    return _read_weights(weights, *check_stats(stats, spans))


def _read_weights(
    weights: Tensor, names: Iterable[str], spans: Mapping[str, Span]
) -> dict[str, Tensor]:
    result = {}
    for name in names:
        if name == "entropy":
            result[name] = -(weights * weights.clamp_min(1e-45).log()).sum(-1)
        elif name == "max":
            result[name] = weights.amax(-1)
        elif name == "argmax":
            result[name] = weights.argmax(-1)
        elif name == "sink":
            result[name] = weights[..., 0]
        else:
            span_name = name.removeprefix("mass:")
            lo, hi = spans[span_name]
            if isinstance(lo, Tensor):
                result[name] = (
                    weights * _span_indicator(span_name, spans[span_name], weights)
                ).sum(-1)
            else:
                result[name] = weights[..., lo:hi].sum(-1)
    return result
