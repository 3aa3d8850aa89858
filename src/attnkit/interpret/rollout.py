"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Each layer mixes its input tokens by its attention, and the residual connection carries each
token through as well, so a layer's effective mixing is ``Â = norm(A + I)`` (rows summing to one).
Rollout multiplies these matrices from the first layer up: ``R = Â_L ··· Â_1``, and ``R[i, j]``
is how much input token ``j`` contributes to token ``i`` at the top, under the assumption that
attention weights are how information moves (the assumption attnkit's faithfulness checks test).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["HEAD_FUSIONS", "fuse_heads", "rollout"]

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(weights: Tensor, how: str = "mean") -> Tensor:
    """Combine the heads of ``(B, H, Q, K)`` weights into ``(B, Q, K)`` by mean, max or min."""
    if weights.dim() != 4:
        raise ValueError(f"weights must be (B, H, Q, K), got shape {tuple(weights.shape)}")
    if how == "mean":
        return weights.mean(dim=1)
    if how == "max":
        return weights.amax(dim=1)
    if how == "min":
        return weights.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {list(HEAD_FUSIONS)}, got {how!r}")


def _discard_lowest(attention: Tensor, ratio: float) -> Tensor:
    """Zero the ``ratio`` smallest off-diagonal entries of each example's ``(N, N)`` matrix."""
    batch, n, _ = attention.shape
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=attention.device)
    candidates = attention.masked_fill(~off_diagonal, torch.inf).reshape(batch, -1)
    count = int(ratio * n * (n - 1))
    if count == 0:
        return attention
    lowest = candidates.topk(count, dim=-1, largest=False).indices  # (B, count)
    return attention.reshape(batch, -1).scatter(-1, lowest, 0.0).reshape(batch, n, n)


def _normalize_rows(matrix: Tensor) -> Tensor:
    total = matrix.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, matrix / total.clamp_min(torch.finfo(matrix.dtype).tiny), 0.0)


def rollout(
    weights: Sequence[Tensor] | Mapping[str, Tensor],
    head_fusion: str = "mean",
    residual: bool = True,
    discard_ratio: float = 0.0,
    start_layer: int = 0,
) -> Tensor:
    """Attention rollout over layers, bottom to top.

    Args:
        weights: per-layer self-attention weights ``(B, H, N, N)`` in forward order, as a list
            or as ``capture(...).weights``.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        residual: add the identity for the residual connection, ``Â = norm(A + I)``.
        discard_ratio: fraction in ``[0, 1)`` of each layer's smallest off-diagonal weights set to
            zero before the residual (Gildenblat's noise filter for vision transformers).
        start_layer: index of the first layer to include.

    Returns:
        ``(B, N, N)``: row ``i`` is token ``i``'s mixture of the input tokens.
    """
    layers = list(weights.values()) if isinstance(weights, Mapping) else list(weights)
    if not layers:
        raise ValueError("weights must hold at least one layer")
    if not 0 <= start_layer < len(layers):
        raise ValueError(f"start_layer must be in [0, {len(layers)}), got {start_layer}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    shape = layers[0].shape
    for i, layer in enumerate(layers):
        if layer.dim() != 4 or layer.shape[-1] != layer.shape[-2] or layer.shape != shape:
            raise ValueError(
                f"every layer must be self-attention weights (B, H, N, N) of one shape; "
                f"layer {i} is {tuple(layer.shape)}, layer 0 is {tuple(shape)}"
            )
    eye = torch.eye(shape[-1], dtype=layers[0].dtype, device=layers[0].device)
    result = None
    for layer in layers[start_layer:]:
        attention = fuse_heads(layer, head_fusion)  # (B, N, N)
        if discard_ratio:
            attention = _discard_lowest(attention, discard_ratio)
        if residual:
            attention = attention + eye
        attention = _normalize_rows(attention)
        result = attention if result is None else attention @ result
    return result
