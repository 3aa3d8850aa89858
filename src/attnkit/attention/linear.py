"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").

**An approximation, not softmax attention.** The similarity ``exp(q·k)`` is replaced by the kernel
``φ(q)·φ(k)`` with the feature map ``φ(x) = elu(x) + 1``, so the weights are

    w_ij = φ(q_i)·φ(k_j) / Σ_j' φ(q_i)·φ(k_j')

and the output ``Σ_j w_ij v_j`` can be computed as ``φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ)`` without the
``Q × K`` matrix: time ``O(N·D·Dv)`` and memory ``O(N·D)`` instead of ``O(N²)``. A model must be
trained with it; it does not reproduce the outputs of a softmax-trained model. Causal attention
uses running sums over chunks of :data:`CHUNK` queries (the quadratic form inside a chunk, the
carried state across chunks).

Supported: causal masking (bottom-right aligned) and key masks (``(B, K)`` padding, any mask of
size 1 along the query axis). Not supported, with a clear error: per-query masks (sliding window),
additive biases (ALiBi) and dropout, which have no weight matrix to act on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.attention.functional import causal_mask, kv_groups
from attnkit.attention.output import AttentionOutput

__all__ = ["CHUNK", "elu_feature_map", "linear_attention"]

CHUNK = 128  # queries per chunk of causal linear attention


def elu_feature_map(x: Tensor) -> Tensor:
    """``φ(x) = elu(x) + 1``, positive everywhere (Katharopoulos et al. 2020, eq. 7)."""
    return F.elu(x) + 1.0


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    # The denominator is a sum of positive terms; it is 0 only when every key is masked out.
    return numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)


def linear_attention(
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
    """Linear attention with the backend signature (see :mod:`attnkit.attention.backends`).

    Args:
        query: ``(B, H, Q, D)``.
        key: ``(B, Hkv, K, D)``.
        value: ``(B, Hkv, K, Dv)``.
        mask: a key mask, broadcastable to ``(B, H, 1, K)``; ``True`` = may attend.
        bias: must be ``None``.
        causal: causal masking, queries being the last ``Q`` positions.
        scale: multiplies the queries before the feature map; ``None`` leaves them as they are.
        dropout_p: must be 0.
        need_weights: also materialize the ``(B, H, Q, K)`` kernel weights (``O(N²)``).

    Returns:
        ``AttentionOutput(output (B, H, Q, Dv), weights (B, H, Q, K) or None)``.
    """
    if bias is not None:
        raise ValueError("the 'linear' backend cannot add a score bias (e.g. ALiBi); use 'sdpa'")
    if dropout_p:
        raise ValueError(
            f"the 'linear' backend has no weights to drop out; got dropout_p={dropout_p}"
        )
    if mask is not None and mask.shape[-2] != 1:
        raise ValueError(
            "the 'linear' backend supports key masks ((B, K) padding) and causal masking only, "
            f"got a per-query mask of shape {tuple(mask.shape)} (a sliding window, for example)"
        )
    group = kv_groups(query, key)
    if group > 1:
        key = key.repeat_interleave(group, dim=1)  # (B, H, K, D)
        value = value.repeat_interleave(group, dim=1)  # (B, H, K, Dv)
    if scale is not None:
        query = query * scale
    phi_q = elu_feature_map(query)  # (B, H, Q, D)
    phi_k = elu_feature_map(key)  # (B, H, K, D)
    if mask is not None:
        phi_k = phi_k * mask.transpose(-1, -2)  # masked keys contribute nothing

    num_queries, num_keys = query.shape[-2], key.shape[-2]
    if need_weights:
        similarity = phi_q @ phi_k.transpose(-1, -2)  # (B, H, Q, K)
        if causal:
            similarity = similarity * causal_mask(num_queries, num_keys, device=query.device)
        weights = _safe_divide(similarity, similarity.sum(dim=-1, keepdim=True))
        return AttentionOutput(weights @ value, weights)

    if not causal:
        state = phi_k.transpose(-1, -2) @ value  # (B, H, D, Dv)
        normalizer = phi_k.sum(dim=-2).unsqueeze(-1)  # (B, H, D, 1)
        return AttentionOutput(_safe_divide(phi_q @ state, phi_q @ normalizer))

    past = num_keys - num_queries  # keys before the first query: visible to every query
    state = phi_k[..., :past, :].transpose(-1, -2) @ value[..., :past, :]  # (B, H, D, Dv)
    normalizer = phi_k[..., :past, :].sum(dim=-2).unsqueeze(-1)  # (B, H, D, 1)
    chunks = []
    for start in range(0, num_queries, CHUNK):
        stop = min(start + CHUNK, num_queries)
        q_c = phi_q[..., start:stop, :]  # (B, H, C, D)
        k_c = phi_k[..., past + start : past + stop, :]  # (B, H, C, D)
        v_c = value[..., past + start : past + stop, :]  # (B, H, C, Dv)
        local = (q_c @ k_c.transpose(-1, -2)).tril()  # (B, H, C, C)
        numerator = q_c @ state + local @ v_c
        denominator = q_c @ normalizer + local.sum(dim=-1, keepdim=True)
        chunks.append(_safe_divide(numerator, denominator))
        state = state + k_c.transpose(-1, -2) @ v_c
        normalizer = normalizer + k_c.sum(dim=-2).unsqueeze(-1)
    return AttentionOutput(torch.cat(chunks, dim=-2))
