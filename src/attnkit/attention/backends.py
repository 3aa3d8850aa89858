"""Attention kernels behind one registry and one signature.

Every backend is a function with the signature of :class:`AttentionFn`::

    fn(query, key, value, *, mask=None, bias=None, causal=False, scale=None,
       dropout_p=0.0, need_weights=False) -> AttentionOutput

- ``query``: ``(B, H, Q, D)``; ``key``: ``(B, Hkv, K, D)``; ``value``: ``(B, Hkv, K, Dv)``, where
  ``H`` is a multiple of ``Hkv`` (grouped-query attention; head ``h`` reads key/value head
  ``h // (H // Hkv)``).
- ``mask``: boolean, broadcastable to ``(B, H, Q, K)``, ``True`` = may attend.
- ``bias``: float, broadcastable to ``(B, H, Q, K)``, added to the scores (ALiBi, for example).
- ``causal``: causal masking aligned bottom-right (queries are the last ``Q`` key positions).
- returns :class:`~attnkit.attention.output.AttentionOutput` with ``output`` ``(B, H, Q, Dv)`` and
  ``weights`` ``(B, H, Q, K)`` when ``need_weights`` (before dropout).

Registered here: ``"math"`` (the reference; materializes the weights), ``"sdpa"`` (PyTorch's fused
:func:`~torch.nn.functional.scaled_dot_product_attention`) and ``"linear"`` (an *approximation*,
see :mod:`attnkit.attention.linear`). ``"auto"`` resolves to ``"sdpa"``, or to ``"math"`` when
weights are asked for. This mirrors Hugging Face's ``AttentionInterface``: one signature, eager
as the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.attention.functional import causal_mask, kv_groups, softmax
from attnkit.attention.linear import linear_attention
from attnkit.attention.output import AttentionOutput

__all__ = [
    "AttentionFn",
    "Backend",
    "available",
    "get",
    "math_attention",
    "register",
    "resolve",
    "unregister",
    "weighted_values",
]

# PyTorch 2.5 added enable_gqa to SDPA and made fully masked rows return zeros.
_TORCH_2_5 = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


class AttentionFn(Protocol):
    """The one signature every attention backend implements (see the module docstring)."""

    def __call__(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        *,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        causal: bool = False,
        scale: float | None = None,
        dropout_p: float = 0.0,
        need_weights: bool = False,
    ) -> AttentionOutput: ...


@dataclass(frozen=True)
class Backend:
    """A registered attention kernel.

    Attributes:
        name: the registry key.
        fn: the kernel, with the :class:`AttentionFn` signature.
        exact: ``True`` when it computes softmax attention exactly (up to floating point), so it
            must agree with ``"math"``; ``False`` for approximations such as ``"linear"``.
        weights: whether it can return the attention weights (``need_weights=True``).
    """

    name: str
    fn: AttentionFn
    exact: bool = True
    weights: bool = False


_REGISTRY: dict[str, Backend] = {}


def register(
    name: str,
    fn: AttentionFn,
    *,
    exact: bool = True,
    weights: bool = False,
    overwrite: bool = False,
) -> Backend:
    """Add an attention kernel to the registry under ``name`` and return its entry."""
    if name == "auto":
        raise ValueError("backend name 'auto' is reserved for automatic selection")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"backend {name!r} is already registered; pass overwrite=True to replace")
    backend = Backend(name=name, fn=fn, exact=exact, weights=weights)
    _REGISTRY[name] = backend
    return backend


def unregister(name: str) -> None:
    """Remove the backend called ``name`` from the registry."""
    get(name)
    del _REGISTRY[name]


def available() -> list[str]:
    """Names of the registered backends, plus ``"auto"``."""
    return ["auto", *sorted(_REGISTRY)]


def get(name: str) -> Backend:
    """The registered backend called ``name``; raises ``ValueError`` for an unknown name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"backend must be one of {available()}, got {name!r}") from None


def resolve(name: str, need_weights: bool) -> Backend:
    """The backend to run for ``name``: ``"auto"`` is ``"sdpa"``, or ``"math"`` for weights."""
    if name == "auto":
        return _REGISTRY["math" if need_weights else "sdpa"]
    backend = get(name)
    if need_weights and not backend.weights:
        raise ValueError(
            f"backend {name!r} does not return attention weights; use backend='auto' or "
            f"'math' with need_weights=True"
        )
    return backend


def math_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> AttentionOutput:
    """Reference attention: ``softmax(q kᵀ · scale + bias, mask) v``, written out in full.

    Materializes the ``(B, H, Q, K)`` weights. Shapes as in the module docstring. Masked keys
    get exactly zero weight and a query with no allowed key gets all-zero weights (never NaN).

    Without autograd (no input requires grad, or ``torch.no_grad()``) the weights are a single
    ``(B, H, Q, K)`` tensor: ``q kᵀ`` is written straight into it and the scale, bias, mask and
    softmax are applied in place (as ``nn.MultiheadAttention``'s kernel does with its softmax),
    bit for bit the numbers of the out-of-place path. With autograd the out-of-place operations
    run, so that autograd can differentiate them.
    """
    group = kv_groups(query, key)
    batch, heads, num_queries, _ = query.shape
    kv_heads, num_keys = key.shape[1], key.shape[-2]
    # the query heads sharing a key/value head are stacked along the queries, so that
    # grouped-query attention needs no copy of the keys and values
    grouped = query.reshape(batch, kv_heads, group * num_queries, -1)  # (B, Hkv, G·Q, D)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    if causal:
        tri = causal_mask(num_queries, num_keys, device=query.device)
        mask = tri if mask is None else mask & tri
    shape = (batch, heads, num_queries, num_keys)
    if _in_place_allowed(query, key, value, bias, mask, shape):
        weights = _weights_in_place(grouped, key, mask, bias, scale, shape)
        attended = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
        output = weighted_values(attended, value)  # (B, H, Q, Dv)
        if mask is not None and output.isnan().any():
            # a row with no allowed key is all -inf, NaN after the softmax: zero it. Looked for
            # in the small output, so that no extra pass over the weights is paid otherwise
            dead = ~mask.any(-1, keepdim=True)  # broadcasts to (B, H, Q, 1)
            weights.masked_fill_(dead, 0.0)
            output = output.masked_fill(dead, 0.0)
        return AttentionOutput(output, weights if need_weights else None)
    scores = (grouped @ key.transpose(-1, -2)) * scale  # (B, Hkv, G·Q, K)
    scores = scores.view(shape)  # (B, H, Q, K)
    if bias is not None:
        scores = scores + bias
    weights = softmax(scores, mask)
    attended = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return AttentionOutput(weighted_values(attended, value), weights if need_weights else None)


def _in_place_allowed(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    bias: Tensor | None,
    mask: Tensor | None,
    shape: tuple[int, int, int, int],
) -> bool:
    """Whether the in-place path of :func:`math_attention` computes what the other one does.

    It does when autograd records nothing, the inputs share one dtype (no type promotion to
    skip) and the bias and mask broadcast to the scores' ``shape`` without widening it.
    """
    inputs = [query, key, value] + ([] if bias is None else [bias])
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return False
    if any(t.dtype != query.dtype for t in inputs):
        return False
    return all(
        extra is None or torch.broadcast_shapes(extra.shape, shape) == shape
        for extra in (bias, mask)
    )


def _weights_in_place(
    grouped: Tensor,
    key: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    scale: float,
    shape: tuple[int, int, int, int],
) -> Tensor:
    """The weights of :func:`math_attention` in one allocation, without autograd.

    Args:
        grouped: the queries stacked by key/value head, ``(B, Hkv, G·Q, D)``.
        key: ``(B, Hkv, K, D)``.
        mask: boolean (causal included), broadcastable to ``shape``; ``None`` for none.
        bias: broadcastable to ``shape``, or ``None``.
        shape: ``(B, H, Q, K)``.

    Returns:
        ``(B, H, Q, K)``; a row with no allowed key is NaN (the caller zeroes it).
    """
    batch, kv_heads, rows, _ = grouped.shape
    # a power-of-two scale (head size 16, 64, 256) is exact on the (B, Hkv, G·Q, D) queries:
    # every product and partial sum scales exactly, so (s·q)kᵀ = s·(qkᵀ) bit for bit in float32
    # and float64 (their normal range is wide enough; float16's is not), without a pass over
    # the scores
    prescale = grouped.dtype in (torch.float32, torch.float64) and math.frexp(scale)[0] == 0.5
    if prescale:
        grouped = grouped * scale
    if prescale and bias is None and mask is not None and mask.shape[:-2].numel() == 1:
        return _masked_in_place(grouped, key, mask, shape)
    scores = torch.empty(
        (batch, kv_heads, rows, shape[-1]), dtype=grouped.dtype, device=grouped.device
    )
    torch.matmul(grouped, key.transpose(-1, -2), out=scores)  # (B, Hkv, G·Q, K)
    weights = (scores if prescale else scores.mul_(scale)).view(shape)  # (B, H, Q, K)
    if bias is not None:
        weights.add_(bias)
    if mask is not None:
        # -inf: a masked key's exp is exactly 0, as the multiplication by the mask gives
        weights.masked_fill_(~mask, float("-inf"))
    return torch.softmax(weights, dim=-1, out=weights)


def _masked_in_place(grouped: Tensor, key: Tensor, mask: Tensor, shape) -> Tensor:
    """:func:`_weights_in_place` for one ``(Q, K)`` mask shared by every example and head (a
    causal mask, say): the mask goes into the matrix product as an additive ``0``/``-inf`` term
    (``baddbmm``), so no pass over the ``(B, H, Q, K)`` scores applies it; the same numbers.

    Args:
        grouped: the scaled queries, ``(B, Hkv, G·Q, D)``; key: ``(B, Hkv, K, D)``;
        mask: boolean, ``(Q, K)`` after dropping its leading ones; shape: ``(B, H, Q, K)``.
    """
    batch, heads, num_queries, num_keys = shape
    kv_heads, dim = key.shape[1], key.shape[-1]
    queries = grouped.reshape(batch * heads, num_queries, dim)  # (B·H, Q, D)
    keys = key.unsqueeze(2).expand(batch, kv_heads, heads // kv_heads, num_keys, dim)
    keys = keys.reshape(batch * heads, num_keys, dim)  # (B·H, K, D): a copy only for GQA
    additive = torch.zeros(mask.shape[-2:], dtype=grouped.dtype, device=grouped.device)
    additive.masked_fill_(~mask.reshape(mask.shape[-2:]), float("-inf"))  # (Q, K)
    scores = torch.empty(
        (batch * heads, num_queries, num_keys), dtype=grouped.dtype, device=grouped.device
    )
    torch.baddbmm(additive, queries, keys.transpose(1, 2), out=scores)  # (B·H, Q, K)
    weights = scores.view(shape)  # (B, H, Q, K)
    return torch.softmax(weights, dim=-1, out=weights)


def weighted_values(weights: Tensor, value: Tensor) -> Tensor:
    """``weights @ value`` with grouped-query heads, without copying the values.

    Args:
        weights: ``(B, H, Q, K)``.
        value: ``(B, Hkv, K, Dv)``, ``H`` a multiple of ``Hkv``.

    Returns:
        ``(B, H, Q, Dv)``.
    """
    batch, heads, num_queries, num_keys = weights.shape
    stacked = weights.reshape(batch, value.shape[1], -1, num_keys)  # (B, Hkv, G·Q, K)
    return (stacked @ value).view(batch, heads, num_queries, -1)


def sdpa_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> AttentionOutput:
    """Fused attention with :func:`torch.nn.functional.scaled_dot_product_attention`.

    Never materializes the weights: ``need_weights=True`` raises. Shapes as in the module
    docstring.
    """
    if need_weights:
        raise ValueError("the 'sdpa' backend does not return weights; use 'math' or 'auto'")
    group = kv_groups(query, key)
    num_queries, num_keys = query.shape[-2], key.shape[-2]
    is_causal = causal and mask is None and bias is None and num_queries == num_keys
    if causal and not is_causal and num_queries > 1:
        tri = causal_mask(num_queries, num_keys, device=query.device)
        mask = tri if mask is None else mask & tri
    attn_mask = mask
    if bias is not None:
        attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    gqa = {}
    if group > 1:
        if _TORCH_2_5:
            gqa = {"enable_gqa": True}
        else:
            key = key.repeat_interleave(group, dim=1)
            value = value.repeat_interleave(group, dim=1)
    output = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attn_mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
        **gqa,
    )
    if mask is not None and not _TORCH_2_5:
        output = output.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    return AttentionOutput(output)


register("math", math_attention, weights=True)
register("sdpa", sdpa_attention)
register("linear", linear_attention, exact=False, weights=True)
