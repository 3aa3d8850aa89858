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

__all__ = ["HEAD_FUSIONS", "fuse_heads", "rollout", "rollout_encoder_decoder"]

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
                f"layer {i} is {tuple(layer.shape)}, layer 0 is {tuple(shape)} (for an "
                "encoder-decoder model use rollout_encoder_decoder(encoder, decoder, cross))"
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


def rollout_encoder_decoder(
    encoder: Sequence[Tensor],
    decoder: Sequence[Tensor],
    cross: Sequence[Tensor],
    head_fusion: str = "mean",
    residual: bool = True,
) -> Tensor:
    """Rollout through an encoder-decoder model: how much each input token feeds each decoder token.

    The extension of Abnar & Zuidema (2020) to encoder-decoders (as in Chefer et al. 2021,
    "Generic Attention-model Explainability", which propagates relevance the same way): the
    encoder's rollout ``R_enc = Â_L ··· Â_1`` gives each encoder output as a mixture of source
    tokens; the decoder keeps ``R``, ``(T, T + S)``, each decoder token as a mixture of decoder
    input tokens (first ``T`` columns) and source tokens (last ``S``), starting at ``[I | 0]``.
    Decoder layer ``l`` applies its self-attention, ``R ← norm(A_l + I) R``, then its
    cross-attention, whose residual keeps half of the token and takes half from the encoder
    outputs: ``R ← ½ R + ½ [0 | C_l R_enc]`` (with ``residual=False``: ``R ← A_l R`` and
    ``R ← [0 | C_l R_enc]``).

    Args:
        encoder: encoder self-attention weights per layer, ``(B, H, S, S)``, in forward order.
        decoder: decoder self-attention weights per layer, ``(B, H, T, T)``.
        cross: decoder cross-attention weights per layer, ``(B, H, T, S)``; one per decoder layer.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        residual: add the identity for the residual connections.

    Returns:
        ``(B, T, T + S)``: row ``i`` is decoder token ``i``'s mixture of the decoder input tokens
        and the source tokens; each row sums to one.
    """
    decoder, cross = list(decoder), list(cross)
    if len(decoder) != len(cross) or not decoder:
        raise ValueError(
            f"decoder and cross must hold one tensor per decoder layer (at least one), got "
            f"{len(decoder)} and {len(cross)}"
        )
    source = rollout(encoder, head_fusion=head_fusion, residual=residual)  # (B, S, S)
    batch, num_source = source.shape[0], source.shape[-1]
    for i, (own, other) in enumerate(zip(decoder, cross, strict=True)):
        tokens = own.shape[-1]
        if own.dim() != 4 or own.shape[-2] != tokens or other.shape[-2:] != (tokens, num_source):
            raise ValueError(
                f"decoder layer {i}: self-attention must be (B, H, T, T) and cross-attention "
                f"(B, H, T, {num_source}); got {tuple(own.shape)} and {tuple(other.shape)}"
            )
    tokens = decoder[0].shape[-1]
    eye = torch.eye(tokens, dtype=source.dtype, device=source.device)
    start = [eye.expand(batch, tokens, tokens), source.new_zeros(batch, tokens, num_source)]
    mixture = torch.cat(start, -1)  # (B, T, T + S): [I | 0]
    for own, other in zip(decoder, cross, strict=True):
        attention = fuse_heads(own, head_fusion)  # (B, T, T)
        attention = _normalize_rows(attention + eye) if residual else attention
        mixture = attention @ mixture  # (B, T, T + S)
        from_source = fuse_heads(other, head_fusion) @ source  # (B, T, S)
        taken = torch.cat([mixture.new_zeros(batch, tokens, tokens), from_source], -1)
        mixture = 0.5 * mixture + 0.5 * taken if residual else taken
    return mixture
