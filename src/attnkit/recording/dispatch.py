"""One call of a hooked attention layer: edited if asked, recorded for every open block.

Every adapter (attnkit modules, ``nn.MultiheadAttention``, Hugging Face layers) ends here with
the layer's own query, key and value. Weights are materialized only when a block (or the caller)
asks for them; statistics otherwise come from the streamed kernel (:mod:`attnkit.recording.stats`).

A call may see its keys through a window of a longer sequence (a sliding-window KV cache keeps
only the last keys; a static cache holds empty slots after the tokens seen so far). Its
:class:`Frame` says where: key ``j`` of the call is absolute position ``offset + j`` of a sequence
of ``total`` tokens. What is recorded is always in that absolute frame: weights ``(B, H, Q,
total)`` with zeros outside the window, ``argmax`` as absolute positions, spans read as absolute
positions, ``sink`` as the weight on absolute position 0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention import backends
from attnkit.attention.output import AttentionOutput
from attnkit.recording.stats import (
    Span,
    attention_stats,
    capped_attention,
    checked_stats,
    stats_from_weights,
)

__all__ = ["Edit", "Frame", "Listener", "attend"]


class Listener(Protocol):
    """What a hook needs from whoever listens to a layer (a :class:`Recording`, say)."""

    want_weights: bool
    want_stats: tuple[str, ...]
    spans: dict[str, Span]
    last_query: bool  # only each call's last query is recorded
    heads: list[int] | None  # the heads recorded; None: all
    want_grad: bool  # the weights stay in the autograd graph of the output
    deferred: bool  # decoding steps over fixed keys may wait (attnkit.recording.deferred)

    def _record(
        self,
        layer: str,
        weights: Tensor | None,
        stats: Mapping[str, Tensor],
        selected: bool = False,
    ) -> None: ...

    def _defer(
        self,
        layer: str,
        row: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None,
        bias: Tensor | None,
        scale: float | None,
        softcap: float | None,
        previous: tuple[Tensor, Tensor],
    ) -> None: ...

    def _flush(self, layer: str | None = None) -> None: ...


Edit = Callable[[str, Tensor], Tensor]

# id(module) -> [(listener, layer name)] of the blocks open on that module
ACTIVE: dict[int, list[tuple[Listener, str]]] = {}
# id(module) -> [(edit, layer name)]: interventions that replace the module's weights
EDITS: dict[int, list[tuple[Edit, str]]] = {}
# held while blocks are opened and closed (any thread)
LOCK = threading.RLock()


class Frame(NamedTuple):
    """Where a call's keys sit: key ``j`` is position ``offset + j`` of ``total`` tokens (a named
    tuple: one is made at every cached layer call)."""

    offset: int
    total: int


def attend(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float | None,
    dropout_p: float,
    need_weights: bool,
    softcap: float | None = None,
    frame: Frame | None = None,
    previous: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Attention for one call of a hooked layer: edited if asked, recorded for every listener.

    Args:
        query, key, value: ``(B, H, Q, D)``, ``(B, Hkv, K, D)``, ``(B, Hkv, K, Dv)``.
        mask, bias, causal, scale, dropout_p: as in :mod:`attnkit.attention.backends`.
        need_weights: the caller wants the weights ``(B, H, Q, K)`` back (eager layers).
        softcap: logit soft-cap ``c`` (scores ``c · tanh(scale · q·k / c)``), or ``None``.
        frame: the absolute positions of the keys, or ``None`` (key ``j`` is position ``j``).
        previous: the key and value tensors this call's keys extend, as they are: the same
            tensors (cross-attention over a cached source) or those tensors with one more key
            appended (a growing cache); a decoding step may then wait for its statistics
            (:mod:`attnkit.recording.deferred`).

    Returns:
        ``(output (B, H, Q, Dv), weights (B, H, Q, K) or None)`` in the call's own key frame.
    """
    listeners = ACTIVE.get(id(module), ())
    edits = EDITS.get(id(module), ())
    selected = None  # the heads of the one block, when only they need computing
    if len(listeners) == 1:  # the usual case, without the merging below (once per call)
        one = listeners[0][0]
        names, spans, any_weights = one.want_stats, one.spans, one.want_weights
        last_only = one.last_query and bool(names or any_weights)
        if one.heads is not None and not (edits or need_weights or dropout_p or one.want_grad):
            selected = one.heads
    else:
        names = tuple(dict.fromkeys(n for r, _ in listeners for n in r.want_stats))
        spans = {k: v for r, _ in listeners for k, v in r.spans.items()}
        any_weights = any(r.want_weights for r, _ in listeners)
        recording = [r for r, _ in listeners if r.want_stats or r.want_weights]
        last_only = bool(recording) and all(r.last_query for r in recording)
    weights_wanted = need_weights or dropout_p > 0 or bool(edits) or any_weights
    if (
        previous is not None
        and last_only
        and selected is None
        and not (weights_wanted or len(listeners) != 1)
        and (frame is None or (frame.offset == 0 and frame.total == key.shape[-2]))
        and query.shape[-2] == 1
        and listeners[0][0].deferred
        and listeners[0][0].heads is None
        and not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad))
    ):  # a decoding step over cached keys: the output now, the statistics with the others
        one, layer = listeners[0]
        one._defer(layer, query, key, value, mask, bias, scale, softcap, previous)
        return _fused(query, key, value, mask, bias, causal, scale, softcap).output, None
    offset = 0 if frame is None else frame.offset
    # names and spans were checked when their blocks opened; spans moved into a window are not
    local, empty = _local_spans(spans, offset, key.shape[-2]) if offset else (spans, {})
    weights = None
    if last_only and selected is None and not (edits or need_weights or dropout_p > 0):
        # only the last query is recorded (generation): statistics (and weights, when asked
        # for) for one query row; a decoding step's row is its whole output, a longer call's
        # output comes from the fused kernel
        step = query.shape[-2] == 1
        row = query if step else query[..., -1:, :]
        row_mask, row_bias = _last_row(mask), _last_row(bias)
        computed = _statistics(
            row, key, value, row_mask, row_bias, causal, scale, names, local, softcap, offset
        )
        stats = computed.stats
        result = computed if step else _fused(query, key, value, mask, bias, causal, scale, softcap)
        if weights_wanted:
            weights = _reference(
                row, key, value, row_mask, row_bias, causal, scale, softcap
            ).weights
    elif selected is not None and (names or any_weights):
        # some heads recorded, nothing else needs weights: every head's output from the fused
        # kernel, weights and statistics for the chosen heads alone (cost in their proportion)
        q, k, v, m, b = _select_heads(selected, query, key, value, mask, bias)
        if last_only:
            q, m, b = q[..., -1:, :], _last_row(m), _last_row(b)
        result = _fused(query, key, value, mask, bias, causal, scale, softcap)
        if any_weights:
            weights = _reference(q, k, v, m, b, causal, scale, softcap).weights
            stats = stats_from_weights(weights, names, local) if names else {}
        else:
            chosen = _statistics(q, k, v, m, b, causal, scale, names, local, softcap, offset)
            stats = chosen.stats
    elif edits:
        weights = _reference(query, key, value, mask, bias, causal, scale, softcap).weights
        for edit, layer in edits:
            weights = edit(layer, weights)
        attended = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
        result = AttentionOutput(backends.weighted_values(attended, value), weights)
        stats = stats_from_weights(weights, names, local) if names else {}
    elif weights_wanted:
        result = _reference(query, key, value, mask, bias, causal, scale, softcap, dropout_p)
        weights = result.weights
        stats = stats_from_weights(result.weights, names, local) if names else {}
    elif names:
        result = _statistics(
            query, key, value, mask, bias, causal, scale, names, local, softcap, offset
        )
        stats = result.stats
    else:
        result = _fused(query, key, value, mask, bias, causal, scale, softcap)
        stats = {}
    if frame is not None and (offset or frame.total != key.shape[-2]):
        stats = _absolute_stats(stats, offset, empty)
        recorded = None if weights is None else _absolute_weights(weights, frame)
    else:
        recorded = weights
    for listener, layer in listeners:
        listener._record(layer, recorded, stats, selected=selected is not None)
    return result.output, result.weights


def _select_heads(
    heads: list[int],
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Query, key, value, mask and bias of the chosen query heads only.

    A grouped layer (``Hkv < H``) shares key head ``h // (H / Hkv)`` among query heads; the
    chosen heads get their own key heads, so the result has ``len(heads)`` heads throughout.
    """
    num_heads, num_kv = query.shape[1], key.shape[1]
    if max(heads) >= num_heads:
        raise ValueError(f"heads must be below the layer's {num_heads} heads, got {heads}")
    index = torch.tensor(heads, device=query.device)
    kv_index = index // (num_heads // num_kv)

    def per_head(x: Tensor | None) -> Tensor | None:
        return x if x is None or x.dim() < 4 or x.shape[1] == 1 else x.index_select(1, index)

    picked = query.index_select(1, index), key.index_select(1, kv_index)
    return *picked, value.index_select(1, kv_index), per_head(mask), per_head(bias)


def _reference(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float | None,
    softcap: float | None,
    dropout_p: float = 0.0,
) -> AttentionOutput:
    """Attention written out in full, with its weights."""
    return capped_attention(
        query, key, value, mask=mask, bias=bias, causal=causal, scale=scale, softcap=softcap,
        dropout_p=dropout_p, need_weights=True,
    )  # fmt: skip


def _fused(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float | None,
    softcap: float | None,
) -> AttentionOutput:
    """Attention without weights: the fused kernel (a soft-cap is written out in full)."""
    if softcap is not None:
        return capped_attention(
            query, key, value, mask=mask, bias=bias, causal=causal, scale=scale, softcap=softcap
        )
    return backends.get("sdpa").fn(query, key, value, mask=mask, bias=bias, causal=causal,
                                   scale=scale)  # fmt: skip


def _statistics(
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
    offset: int,
) -> AttentionOutput:
    """:func:`attention_stats`; without checking again what the open blocks checked, unless
    the spans were moved into a window (``offset``)."""
    if offset:
        return attention_stats(
            query, key, value, mask=mask, bias=bias, causal=causal, scale=scale, stats=names,
            spans=spans, softcap=softcap,
        )  # fmt: skip
    return checked_stats(query, key, value, mask, bias, causal, scale, names, spans, softcap)


def _last_row(x: Tensor | None) -> Tensor | None:
    """The last query's row of a mask or bias that may be broadcast along the queries."""
    return x if x is None or x.shape[-2] == 1 else x[..., -1:, :]


def _local_spans(
    spans: Mapping[str, Span], offset: int, num_keys: int
) -> tuple[dict[str, Span], dict[str, Tensor | bool]]:
    """Absolute spans as ranges of a call's keys, which start at position ``offset``.

    Returns:
        ``(spans, empty)``: each span clipped to the call's keys (a placeholder ``(0, 1)`` where
        nothing is left), and, for those with nothing left, ``True`` or a ``(B,)`` boolean per
        example, to zero their mass afterwards.
    """
    local: dict[str, Span] = {}
    empty: dict[str, Tensor | bool] = {}
    for name, (lo, hi) in spans.items():
        if isinstance(lo, Tensor):
            lo = (lo - offset).clamp(0, num_keys)
            hi = (hi - offset).clamp(0, num_keys)
            none = lo >= hi
            if bool(none.any()):
                empty[name] = none
                lo, hi = torch.where(none, 0, lo), torch.where(none, 1, hi)
            local[name] = (lo, hi)
        else:
            lo, hi = max(lo - offset, 0), min(hi - offset, num_keys)
            if lo >= hi:
                empty[name], (lo, hi) = True, (0, 1)
            local[name] = (lo, hi)
    return local, empty


def _absolute_stats(
    stats: Mapping[str, Tensor], offset: int, empty: Mapping[str, Tensor | bool]
) -> dict[str, Tensor]:
    """Statistics of a call whose keys start at ``offset``, in absolute positions."""
    result = dict(stats)
    if "argmax" in result:
        result["argmax"] = result["argmax"] + offset
    if "sink" in result and offset > 0:  # absolute position 0 is outside the window
        result["sink"] = torch.zeros_like(result["sink"])
    for name, none in empty.items():
        key = f"mass:{name}"
        if key in result:
            if none is True:
                result[key] = torch.zeros_like(result[key])
            else:
                keep = (~none).to(result[key].device).view(-1, *([1] * (result[key].dim() - 1)))
                result[key] = result[key] * keep
    return result


def _absolute_weights(weights: Tensor, frame: Frame) -> Tensor:
    """``(B, H, Q, K)`` weights of a call as ``(B, H, Q, total)``, zeros outside its keys."""
    width = min(weights.shape[-1], frame.total - frame.offset)
    if frame.offset == 0 and width == frame.total:
        return weights[..., :width]
    placed = weights.new_zeros(*weights.shape[:-1], frame.total)
    placed[..., frame.offset : frame.offset + width] = weights[..., :width]
    return placed
