"""Per-query attention statistics streamed over key blocks, without the ``Q × K`` matrix.

For weights ``p_ij = softmax_j(s_ij)`` with scores ``s_ij = scale · q_i·k_j + bias_ij`` over the
allowed keys, the statistics of each query ``i`` are:

- ``entropy``: ``-Σ_j p_ij log p_ij``, with ``log p_ij = s_ij - lse_i`` and
  ``lse_i = log Σ_j exp s_ij``;
- ``max``: the largest weight, ``exp(max_j s_ij - lse_i)``;
- ``argmax``: the key holding it;
- ``sink``: the weight on key 0 (Xiao et al. 2024, "attention sinks");
- ``mass:<name>``: ``Σ_{j ∈ span} p_ij`` for a named key span ``[start, stop)``.

The output and ``lse`` come from one fused kernel call where PyTorch exposes it (the CPU flash
kernel); the statistics then need one more pass over the keys in blocks of :data:`BLOCK`, so the
extra memory is ``O(Q · BLOCK)`` whatever ``K`` is. A query with no allowed key gets zeros.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from attnkit.attention.functional import causal_mask, kv_groups
from attnkit.attention.output import AttentionOutput

__all__ = ["BASIC_STATS", "BLOCK", "attention_stats", "check_stats", "stats_from_weights"]

BLOCK = 512  # keys per block of the statistics pass
BASIC_STATS = ("entropy", "max", "argmax", "sink")
_SPAN = re.compile(r"mass:(.+)")


def check_stats(
    stats: Iterable[str], spans: Mapping[str, tuple[int, int]] | None
) -> tuple[tuple[str, ...], dict[str, tuple[int, int]]]:
    """Validate statistic names and spans; ``mass:<name>`` is added for each span.

    Returns:
        ``(names, spans)``: every statistic to compute, and the spans as ``{name: (start, stop)}``.
    """
    if isinstance(stats, str):
        stats = (stats,)
    spans = dict(spans or {})
    for name, span in spans.items():
        if (
            not isinstance(span, tuple | list)
            or len(span) != 2
            or not all(isinstance(x, int) for x in span)
            or not 0 <= span[0] < span[1]
        ):
            raise ValueError(
                f"spans[{name!r}] must be (start, stop) key positions with 0 <= start < stop, "
                f"got {span!r}"
            )
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
    return tuple(dict.fromkeys(names)), {k: (int(v[0]), int(v[1])) for k, v in spans.items()}


def _allowed(
    mask: Tensor | None, causal: bool, num_queries: int, num_keys: int, device: torch.device
) -> Tensor | None:
    if causal:
        tri = causal_mask(num_queries, num_keys, device=device)
        return tri if mask is None else mask & tri
    return mask


def _output_and_lse(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    allowed: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[Tensor, Tensor]:
    """Attention output ``(B, H, Q, Dv)`` and log-sum-exp of the scores ``(B, H, Q)``."""
    if query.device.type == "cpu" and value.shape[-1] == query.shape[-1]:
        additive = bias
        if allowed is not None:
            blocked = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device)
            blocked = blocked.masked_fill(~allowed, -math.inf)
            additive = blocked if bias is None else bias + blocked
        if additive is not None and additive.dim() < 4:
            additive = additive.reshape(*([1] * (4 - additive.dim())), *additive.shape)
        is_causal = causal and allowed is None  # else the causal part is inside `allowed`
        fused = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
        output, lse = fused(query, key, value, 0.0, is_causal, attn_mask=additive, scale=scale)
        return output, lse
    # Elsewhere: one streamed pass with an online softmax (Milakov & Gimelshein 2018).
    num_queries, num_keys = query.shape[-2], key.shape[-2]
    running_max = query.new_full(query.shape[:-1], -math.inf)
    total = query.new_zeros(query.shape[:-1])
    output = query.new_zeros(*query.shape[:-1], value.shape[-1])
    for start in range(0, num_keys, BLOCK):
        scores = _block_scores(query, key, allowed, bias, scale, start, num_queries, num_keys)
        new_max = torch.maximum(running_max, scores.amax(-1))
        safe_max = torch.where(new_max.isfinite(), new_max, 0.0)
        rescale = torch.exp(running_max - safe_max)
        weights = torch.exp(scores - safe_max.unsqueeze(-1))  # (B, H, Q, C)
        total = total * rescale + weights.sum(-1)
        output = output * rescale.unsqueeze(-1) + weights @ value[..., start : start + BLOCK, :]
        running_max = new_max
    output = output / total.clamp_min(torch.finfo(total.dtype).tiny).unsqueeze(-1)
    return output, running_max + total.log()


def _block_scores(
    query: Tensor,
    key: Tensor,
    allowed: Tensor | None,
    bias: Tensor | None,
    scale: float,
    start: int,
    num_queries: int,
    num_keys: int,
) -> Tensor:
    """Scores of all queries against keys ``[start, start + BLOCK)``, -inf where not allowed."""
    stop = min(start + BLOCK, num_keys)
    scores = (query @ key[..., start:stop, :].transpose(-1, -2)) * scale  # (B, H, Q, C)
    if bias is not None:
        scores = scores + bias[..., start:stop]
    if allowed is not None:
        scores = scores.masked_fill(~allowed[..., start:stop], -math.inf)
    return scores


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
    spans: Mapping[str, tuple[int, int]] | None = None,
) -> AttentionOutput:
    """Softmax attention and per-query statistics of its weights, in ``O(Q · BLOCK)`` memory.

    Args:
        query: ``(B, H, Q, D)``.
        key: ``(B, Hkv, K, D)``, ``H`` a multiple of ``Hkv``.
        value: ``(B, Hkv, K, Dv)``.
        mask: boolean, broadcastable to ``(B, H, Q, K)``; ``True`` = may attend.
        bias: float, broadcastable to ``(B, H, Q, K)``, added to the scores.
        causal: causal masking aligned bottom-right (queries are the last ``Q`` positions).
        scale: score scale; ``None`` means ``D ** -0.5``.
        stats: names among ``entropy``, ``max``, ``argmax``, ``sink`` and ``mass:<span>``.
        spans: ``{name: (start, stop)}`` key ranges; each adds ``mass:<name>``.

    Returns:
        ``AttentionOutput(output (B, H, Q, Dv), stats={name: (B, H, Q)})``; ``argmax`` is
        ``int64``, the rest are in the query's dtype.
    """
    names, spans = check_stats(stats, spans)
    group = kv_groups(query, key)
    if group > 1:
        key = key.repeat_interleave(group, dim=1)  # (B, H, K, D)
        value = value.repeat_interleave(group, dim=1)  # (B, H, K, Dv)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    num_queries, num_keys = query.shape[-2], key.shape[-2]
    allowed = _allowed(mask, causal, num_queries, num_keys, query.device)
    output, lse = _output_and_lse(query, key, value, allowed, bias, causal, scale)
    has_key = (
        torch.ones_like(lse, dtype=torch.bool)
        if allowed is None
        else allowed.any(-1).expand(lse.shape)
    )
    lse = torch.where(has_key, lse, math.inf)  # exp(s - inf) = 0 for queries with no key

    result: dict[str, Tensor] = {}
    need_weights = any(n == "entropy" or n.startswith("mass:") for n in names)
    need_max = "max" in names or "argmax" in names
    entropy = torch.zeros_like(lse)
    best = torch.full_like(lse, -math.inf)
    best_index = torch.zeros(lse.shape, dtype=torch.long, device=lse.device)
    masses = {span: torch.zeros_like(lse) for span in spans}
    if need_weights or need_max:
        for start in range(0, num_keys, BLOCK):
            scores = _block_scores(query, key, allowed, bias, scale, start, num_queries, num_keys)
            if need_max:
                block_best, block_index = scores.max(-1)
                better = block_best > best
                best = torch.where(better, block_best, best)
                best_index = torch.where(better, block_index + start, best_index)
            if need_weights:
                log_weights = scores - lse.unsqueeze(-1)  # (B, H, Q, C), -inf where masked
                weights = torch.exp(log_weights)
                finite = torch.where(weights > 0, log_weights, 0.0)
                entropy = entropy - (weights * finite).sum(-1)
                for span, (lo, hi) in spans.items():
                    lo, hi = max(lo, start), min(hi, start + weights.shape[-1])
                    if lo < hi:
                        masses[span] = masses[span] + weights[..., lo - start : hi - start].sum(-1)

    for name in names:
        if name == "entropy":
            result[name] = entropy
        elif name == "max":
            result[name] = torch.exp(best - lse)
        elif name == "argmax":
            result[name] = best_index
        elif name == "sink":
            first = _block_scores(query, key[..., :1, :], None, None, scale, 0, num_queries, 1)
            if bias is not None:
                first = first + bias[..., :1]
            sink = torch.exp(first.squeeze(-1) - lse)
            if allowed is not None:
                sink = sink * allowed[..., 0].expand(sink.shape)
            result[name] = sink
        else:
            result[name] = masses[name.removeprefix("mass:")]
    return AttentionOutput(output, stats=result)


def stats_from_weights(
    weights: Tensor, stats: Iterable[str], spans: Mapping[str, tuple[int, int]] | None = None
) -> dict[str, Tensor]:
    """The same statistics read off materialized weights ``(B, H, Q, K)`` (the reference)."""
    names, spans = check_stats(stats, spans)
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
            lo, hi = spans[name.removeprefix("mass:")]
            result[name] = weights[..., lo:hi].sum(-1)
    return result
