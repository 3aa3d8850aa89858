"""Position information for attention: rotary embeddings, ALiBi and sinusoidal embeddings.

:class:`RotaryEmbedding` and :class:`ALiBi` are *position schemes* for
:class:`~attnkit.attention.multihead.MultiHeadAttention`: each acts through one of two hooks,
``rotate`` (change queries and keys) or ``bias`` (add to the scores). Positions are absolute
token indices; queries sit at the last ``Q`` of the ``K`` key positions, as in a KV cache.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ALiBi", "PositionScheme", "RotaryEmbedding", "alibi_slopes", "sinusoidal_embedding"]


class PositionScheme(nn.Module):
    """Base class: a scheme overrides :meth:`rotate`, :meth:`bias`, or both."""

    def rotate(self, query: Tensor, key: Tensor, offset: int) -> tuple[Tensor, Tensor]:
        """Queries ``(B, H, Q, D)`` and keys ``(B, Hkv, T, D)`` at positions ``offset + t``."""
        return query, key

    def bias(self, num_queries: int, num_keys: int, device: torch.device) -> Tensor | None:
        """An additive score bias broadcastable to ``(B, H, Q, K)``, or ``None``."""
        return None


class RotaryEmbedding(PositionScheme):
    """Rotary position embedding, RoPE (Su et al. 2021, "RoFormer").

    Rotates each pair of features ``(x_i, x_{i + D/2})`` by the angle ``pos · base^(-2i/D)``
    (the "rotate half" layout of GPT-NeoX and Llama), so ``q_m · k_n`` depends on ``m - n`` only.

    Args:
        head_dim: ``D``, even.
        base: the wavelength base, 10000 in the paper.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
        self.head_dim = head_dim
        self.base = base

    def rotate_at(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x`` ``(..., T, D)`` at integer ``positions`` ``(T,)``.

        Angles are computed in float32 (float64 for float64 inputs), then cast to ``x.dtype``.
        """
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        exponents = torch.arange(0, self.head_dim, 2, dtype=dtype, device=x.device) / self.head_dim
        inv_freq = self.base**-exponents  # (D/2,)
        angles = positions.to(dtype)[:, None] * inv_freq  # (T, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, D)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-second, first], dim=-1) * sin

    def rotate(self, query: Tensor, key: Tensor, offset: int) -> tuple[Tensor, Tensor]:
        query_positions = torch.arange(offset, offset + query.shape[-2], device=query.device)
        key_positions = torch.arange(offset, offset + key.shape[-2], device=key.device)
        return self.rotate_at(query, query_positions), self.rotate_at(key, key_positions)


def alibi_slopes(num_heads: int) -> Tensor:
    """Per-head ALiBi slopes (Press et al. 2022): ``2^(-8h/H)`` for ``h = 1..H``.

    For a head count that is not a power of two, the slopes of the nearest lower power of two
    are followed by every other slope of the next one, as in the paper's code.

    Returns:
        ``(H,)`` float32.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be positive, got {num_heads}")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_two(closest)
    if closest != num_heads:
        slopes += power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class ALiBi(PositionScheme):
    """Attention with linear biases (Press et al. 2022, "Train Short, Test Long").

    Adds ``-m_h · |i - j|`` to the score of query position ``i`` and key position ``j``, with the
    per-head slopes ``m_h`` of :func:`alibi_slopes`. No position embedding is added.
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)  # (H,)

    def bias(self, num_queries: int, num_keys: int, device: torch.device) -> Tensor:
        """``(H, Q, K)`` float32 bias, queries at the last ``Q`` key positions."""
        query_pos = torch.arange(num_keys - num_queries, num_keys, device=device)
        key_pos = torch.arange(num_keys, device=device)
        distance = (query_pos[:, None] - key_pos[None, :]).abs()  # (Q, K)
        return -self.slopes[:, None, None] * distance.to(self.slopes.dtype)  # (H, Q, K)


def sinusoidal_embedding(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Sinusoidal position embedding (Vaswani et al. 2017, section 3.5).

    ``PE[p, 2i] = sin(p / base^(2i/dim))`` and ``PE[p, 2i+1] = cos(p / base^(2i/dim))``.

    Args:
        positions: ``(T,)`` positions (integers or floats).
        dim: embedding size, even.

    Returns:
        ``(T, dim)`` float32, to be added to token embeddings.
    """
    if dim % 2:
        raise ValueError(f"dim must be even for sinusoidal embeddings, got {dim}")
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * inv_freq.to(positions.device)  # (T, dim/2)
    embedding = torch.stack([angles.sin(), angles.cos()], dim=-1)  # (T, dim/2, 2)
    return embedding.reshape(positions.shape[0], dim).float()
