"""Pure functions of attention: score functions, masks and normalizers.

Shapes: ``B`` batch, ``H`` heads, ``Q`` queries, ``K`` keys, ``D`` feature size. The score
functions work on any leading dimensions ``...``. Masks are boolean and ``True`` means "may
attend", as in :func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "NORMALIZERS",
    "additive_score",
    "causal_mask",
    "dot_score",
    "drop_heads",
    "entmax15",
    "general_score",
    "kv_groups",
    "memory_inputs",
    "normalize",
    "prepare_mask",
    "scaled_dot_score",
    "softmax",
    "sparsemax",
    "window_mask",
]


# ----------------------------------------------------------------------------- scores


def dot_score(query: Tensor, keys: Tensor) -> Tensor:
    """Dot-product score ``q·k`` (Luong et al. 2015, "dot").

    Args:
        query: ``(..., Q, D)``.
        keys: ``(..., K, D)``.

    Returns:
        ``(..., Q, K)``.
    """
    return query @ keys.transpose(-1, -2)


def scaled_dot_score(query: Tensor, keys: Tensor, scale: float | None = None) -> Tensor:
    """Scaled dot-product score ``q·k / sqrt(D)`` (Vaswani et al. 2017).

    Args:
        query: ``(..., Q, D)``.
        keys: ``(..., K, D)``.
        scale: factor applied to the dot product; ``None`` means ``D ** -0.5``.

    Returns:
        ``(..., Q, K)``.
    """
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return dot_score(query, keys) * scale


def general_score(query: Tensor, keys: Tensor, weight: Tensor) -> Tensor:
    """Bilinear ("general") score ``qᵀ W k`` (Luong et al. 2015).

    Args:
        query: ``(..., Q, Dq)``.
        keys: ``(..., K, Dk)``.
        weight: ``(Dq, Dk)``.

    Returns:
        ``(..., Q, K)``.
    """
    return (query @ weight) @ keys.transpose(-1, -2)


def additive_score(
    query: Tensor,
    keys: Tensor,
    query_weight: Tensor,
    key_weight: Tensor,
    v: Tensor,
    bias: Tensor | None = None,
) -> Tensor:
    """Additive ("concat") score ``vᵀ tanh(W q + U k + b)`` (Bahdanau et al. 2015).

    Args:
        query: ``(..., Q, Dq)``.
        keys: ``(..., K, Dk)``.
        query_weight: ``W``, ``(A, Dq)`` where ``A`` is the hidden size.
        key_weight: ``U``, ``(A, Dk)``.
        v: ``(A,)``.
        bias: ``b``, ``(A,)`` or ``None``.

    Returns:
        ``(..., Q, K)``. Memory is ``O(Q·K·A)``: this score is meant for modest sizes.
    """
    projected_query = query @ query_weight.T  # (..., Q, A)
    projected_keys = keys @ key_weight.T  # (..., K, A)
    if bias is not None:
        projected_keys = projected_keys + bias
    hidden = torch.tanh(
        projected_query.unsqueeze(-2) + projected_keys.unsqueeze(-3)
    )  # (..., Q, K, A)
    return hidden @ v


def kv_groups(query: Tensor, key: Tensor) -> int:
    """Query heads per key/value head, ``H // Hkv``, for ``(B, H, Q, D)`` and ``(B, Hkv, K, D)``.

    Raises ``ValueError`` when ``H`` is not a multiple of ``Hkv``.
    """
    heads, kv_heads = query.shape[1], key.shape[1]
    if heads % kv_heads:
        raise ValueError(
            f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads})"
        )
    return heads // kv_heads


def memory_inputs(
    query: Tensor, keys: Tensor, values: Tensor | None, query_dim: int, key_dim: int
) -> tuple[Tensor, Tensor, bool]:
    """Check the inputs of a single-head mechanism that reads a memory (soft or hard attention).

    Args:
        query: ``(B, Q, Dq)``, or ``(B, Dq)`` for one query per example.
        keys: ``(B, K, Dk)``.
        values: ``(B, K, Dv)``, or ``None`` to read the keys.

    Returns:
        ``(query (B, Q, Dq), values (B, K, Dv), single)``, ``single`` when the query had no
        ``Q`` dimension.
    """
    values = keys if values is None else values
    for name, tensor in (("query", query), ("keys", keys), ("values", values)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    single = query.ndim == 2
    if single:
        query = query.unsqueeze(1)  # (B, 1, Dq)
    if query.ndim != 3 or query.shape[-1] != query_dim:
        raise ValueError(
            f"query must be (B, {query_dim}) or (B, Q, {query_dim}), got shape {tuple(query.shape)}"
        )
    if keys.ndim != 3 or keys.shape[-1] != key_dim or keys.shape[0] != query.shape[0]:
        raise ValueError(
            f"keys must be (B, K, {key_dim}) with the query's batch size {query.shape[0]}, "
            f"got shape {tuple(keys.shape)}"
        )
    if values.ndim != 3 or values.shape[:2] != keys.shape[:2]:
        raise ValueError(
            f"values must be (B, K, Dv) with keys' (B, K) = {tuple(keys.shape[:2])}, "
            f"got shape {tuple(values.shape)}"
        )
    return query, values, single


# ----------------------------------------------------------------------------- masks


def causal_mask(num_queries: int, num_keys: int, device: torch.device | None = None) -> Tensor:
    """Causal mask, aligned bottom-right: query ``i`` sits at position ``K - Q + i``.

    With ``Q == K`` this is the usual lower-triangular mask; with fewer queries than keys (a
    decoding step over a KV cache) the queries are the last ``Q`` positions.

    Returns:
        ``(Q, K)`` boolean, ``True`` where key position ``<=`` query position.
    """
    query_pos = torch.arange(num_keys - num_queries, num_keys, device=device)
    key_pos = torch.arange(num_keys, device=device)
    return key_pos[None, :] <= query_pos[:, None]


def window_mask(
    num_queries: int, num_keys: int, window: int, device: torch.device | None = None
) -> Tensor:
    """Local (sliding-window) mask, aligned bottom-right like :func:`causal_mask`.

    Query ``i`` may attend to key ``j`` when ``|pos(i) - j| < window``: with a causal mask on top,
    that is the last ``window`` positions including its own (as in Mistral's sliding window).

    Returns:
        ``(Q, K)`` boolean.
    """
    if window < 1:
        raise ValueError(f"window must be a positive integer, got {window}")
    query_pos = torch.arange(num_keys - num_queries, num_keys, device=device)
    key_pos = torch.arange(num_keys, device=device)
    return (query_pos[:, None] - key_pos[None, :]).abs() < window


def prepare_mask(
    mask: Tensor | None, scores_shape: Sequence[int], name: str = "mask"
) -> Tensor | None:
    """Check a user mask and give it as many dimensions as the scores.

    A 2-D mask is a key-padding mask ``(B, K)``. A mask with one dimension fewer than
    ``(B, H, Q, K)`` is ``(B, Q, K)`` and is shared by the heads. Otherwise every dimension must
    equal the scores' or be 1.

    Args:
        mask: boolean, ``True`` means "may attend"; ``None`` passes through.
        scores_shape: ``(B, Q, K)`` or ``(B, H, Q, K)``.
        name: the argument's name, for error messages.

    Returns:
        A boolean tensor with ``len(scores_shape)`` dimensions that broadcasts to the scores.
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a boolean torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name} must have dtype torch.bool (True = may attend), got {mask.dtype}; "
            f"convert with {name}.bool() or build it with a comparison"
        )
    ndim = len(scores_shape)
    original = tuple(mask.shape)
    if mask.ndim == 2:
        mask = mask.reshape(mask.shape[0], *([1] * (ndim - 2)), mask.shape[1])  # (B, [1,] 1, K)
    elif mask.ndim == ndim - 1 and ndim == 4:
        mask = mask.unsqueeze(1)  # (B, 1, Q, K)
    ok = mask.ndim == ndim and all(
        m in (1, s) for m, s in zip(mask.shape, scores_shape, strict=True)
    )
    if not ok:
        letters = "(B, H, Q, K)" if ndim == 4 else "(B, Q, K)"
        raise ValueError(
            f"{name} must be a (B, K) = ({scores_shape[0]}, {scores_shape[-1]}) key-padding mask "
            f"or broadcast to {letters} = {tuple(scores_shape)}, got shape {original}"
        )
    return mask


# ----------------------------------------------------------------------------- normalizers


def _temper(scores: Tensor, temperature: float) -> Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return scores if temperature == 1.0 else scores / temperature


def softmax(scores: Tensor, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """Softmax over the last dimension, ``softmax(scores / temperature)``, with a boolean mask.

    Masked keys get exactly zero weight; a row with no allowed key is all zeros (never NaN).

    Args:
        scores: ``(..., K)``.
        mask: boolean, broadcastable to ``scores``; ``True`` means "may attend".
        temperature: > 0; lower is sharper.

    Returns:
        Weights, the shape of ``scores``.
    """
    scores = _temper(scores, temperature)
    if mask is None:
        return torch.softmax(scores, dim=-1)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * mask


def _sparse_normalize(
    fn: Callable[..., Tensor], margin: float, scores: Tensor, mask: Tensor | None
) -> Tensor:
    """Apply a sparse normalizer of the ``entmax`` package along the last dimension, masked.

    Sparsemax gives zero weight to any score more than 1 below the row maximum, and entmax-1.5
    to any score more than 2 below it (Peters et al. 2019), so a masked score set to
    ``allowed max - margin`` is excluded exactly and does not change the allowed weights.
    """
    if mask is not None:
        allowed_max = scores.masked_fill(~mask, float("-inf")).amax(dim=-1, keepdim=True)
        allowed_max = torch.where(allowed_max.isfinite(), allowed_max, 0.0).detach()
        scores = torch.where(mask, scores, allowed_max - margin)
    weights = fn(scores, dim=-1)
    return weights if mask is None else weights * mask


def sparsemax(scores: Tensor, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """Sparsemax (Martins & Astudillo 2016): the Euclidean projection onto the simplex.

    Unlike softmax it gives exactly zero weight to low-scoring keys. Uses the ``entmax`` package.
    Arguments and result as in :func:`softmax`.
    """
    from entmax import sparsemax as _sparsemax

    return _sparse_normalize(_sparsemax, 2.0, _temper(scores, temperature), mask)


def entmax15(scores: Tensor, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """1.5-entmax (Peters et al. 2019): sparse like sparsemax, smoother like softmax.

    Uses the exact sort-based algorithm of the ``entmax`` package. Arguments and result as in
    :func:`softmax`.
    """
    from entmax import entmax15 as _entmax15

    return _sparse_normalize(_entmax15, 3.0, _temper(scores, temperature), mask)


Normalizer = Callable[[Tensor, Tensor | None, float], Tensor]

NORMALIZERS: dict[str, Normalizer] = {
    "softmax": softmax,
    "sparsemax": sparsemax,
    "entmax15": entmax15,
}


def normalize(
    scores: Tensor,
    mask: Tensor | None = None,
    method: str = "softmax",
    temperature: float = 1.0,
) -> Tensor:
    """Turn scores into attention weights with the normalizer named ``method``.

    Args:
        scores: ``(..., K)``.
        mask: boolean, broadcastable to ``scores``; ``True`` means "may attend".
        method: one of :data:`NORMALIZERS` (``"softmax"``, ``"sparsemax"``, ``"entmax15"``).
        temperature: > 0.

    Returns:
        Weights, the shape of ``scores``.
    """
    try:
        fn = NORMALIZERS[method]
    except KeyError:
        raise ValueError(
            f"normalizer must be one of {sorted(NORMALIZERS)}, got {method!r}"
        ) from None
    return fn(scores, mask, temperature)


# ----------------------------------------------------------------------------- regularization


def drop_heads(heads: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """DropHead (Zhou et al. 2020, "Scheduled DropHead"): drop whole attention heads.

    Each head of each example is dropped with probability ``p``; the kept heads are scaled by
    ``H / kept`` so that the sum over heads keeps its scale. An example that loses every head
    gets zeros. Call it in training only.

    Args:
        heads: per-head outputs ``(B, H, Q, D)``.
        p: drop probability in ``[0, 1)``.
        generator: optional random generator.

    Returns:
        ``(B, H, Q, D)``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    if heads.dim() != 4:
        raise ValueError(f"heads must be (B, H, Q, D), got shape {tuple(heads.shape)}")
    if p == 0.0:
        return heads
    batch, num_heads = heads.shape[:2]
    keep = torch.rand(batch, num_heads, device=heads.device, generator=generator) >= p  # (B, H)
    kept = keep.sum(1, keepdim=True).clamp(min=1)
    scale = keep.to(heads.dtype) * (num_heads / kept.to(heads.dtype))  # (B, H)
    return heads * scale[:, :, None, None]
