"""A key/value cache for step-by-step decoding with :class:`MultiHeadAttention`."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache"]


class KVCache:
    """Keys and values of the positions decoded so far, for one attention layer.

    Pass the same cache to every call of a layer; the layer appends the new keys and values
    (after rotary embedding) and attends over everything stored. Keys are ``(B, Hkv, T, D)``.

    Example::

        cache = KVCache()
        for t in range(steps):
            out = mha(x[:, t : t + 1], cache=cache)
    """

    def __init__(self) -> None:
        self.key: Tensor | None = None
        self.value: Tensor | None = None

    def __len__(self) -> int:
        """Number of positions stored."""
        return 0 if self.key is None else self.key.shape[-2]

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``key`` ``(B, Hkv, T, D)`` and ``value`` ``(B, Hkv, T, Dv)``; return all so far."""
        if self.key is None or self.value is None:
            self.key, self.value = key, value
        else:
            if key.shape[:2] != self.key.shape[:2] or key.shape[-1] != self.key.shape[-1]:
                raise ValueError(
                    f"key of shape {tuple(key.shape)} does not fit a cache holding "
                    f"{tuple(self.key.shape)}: batch, heads and head size must match"
                )
            self.key = torch.cat([self.key, key], dim=-2)
            self.value = torch.cat([self.value, value], dim=-2)
        return self.key, self.value

    def reset(self) -> None:
        """Forget every stored position."""
        self.key = self.value = None
