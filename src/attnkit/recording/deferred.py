"""Decoding steps over fixed keys, their statistics computed together.

In an encoder-decoder's generation every decoding step's cross-attention reads the same keys and
values: the encoder's output, projected once and then reused from the cache. The statistics of
those steps need not be computed one step at a time: a block opened with ``deferred=True`` keeps
each step's query row (and mask or bias row), the step itself running on PyTorch's fused kernel
with nothing else computed, and computes the statistics of all the rows over those keys in one
kernel call per layer when the block ends or its statistics are read. The numbers are those of
the step-by-step path (the same fused kernel, more rows at once).

The rows wait only while the keys stay the same tensors, unchanged: a call over other keys (a
beam reordering the cache, a new generation) computes the waiting rows first. Keys changed in
place while rows wait (a static cache reset between two ``generate()`` calls in one block) cannot
be read back; that is reported as an error, never computed over the new values.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from attnkit.recording.stats import Span, checked_stats

__all__ = ["Waiting"]


class Waiting:
    """The query rows of one layer waiting for their statistics over one set of keys.

    Args:
        key: ``(B, Hkv, K, D)``, the keys every row attends to.
        value: ``(B, Hkv, K, Dv)``.
        scale: score scale (``None``: ``D ** -0.5``).
        softcap: logit soft-cap, or ``None``.
    """

    def __init__(
        self, key: Tensor, value: Tensor, scale: float | None, softcap: float | None
    ) -> None:
        self.key, self.value, self.scale, self.softcap = key, value, scale, softcap
        self.versions = (key._version, value._version)
        self.rows: list[Tensor] = []  # (B, H, 1, D) each
        self.masks: list[Tensor | None] = []  # (B|1, H|1, 1, K) boolean each, or None
        self.biases: list[Tensor | None] = []  # (B|1, H|1, 1, K) float each, or None

    def holds(self, key: Tensor, value: Tensor, scale: float | None, softcap: float | None) -> bool:
        """Whether a row over these keys (and scale, soft-cap) can wait with the others."""
        return (
            key is self.key
            and value is self.value
            and (key._version, value._version) == self.versions
            and scale == self.scale
            and softcap == self.softcap
        )

    def add(self, row: Tensor, mask: Tensor | None, bias: Tensor | None) -> None:
        """Keep one decoding step's query row ``(B, H, 1, D)`` with its mask and bias rows."""
        self.rows.append(row)
        self.masks.append(mask)
        self.biases.append(bias)

    def stats(self, names: tuple[str, ...], spans: Mapping[str, Span]) -> dict[str, Tensor]:
        """``{name: (B, H, n)}`` for the ``n`` waiting rows, in the order they came.

        Raises:
            RuntimeError: the keys or values were changed in place while the rows waited.
        """
        if (self.key._version, self.value._version) != self.versions:
            raise RuntimeError(
                "the cross-attention keys of a deferred capture block were changed in place "
                "(a static cache reset?) before their statistics were computed; open one "
                "capture(..., deferred=True) block per generate() call, or leave deferred off"
            )
        query = torch.cat(self.rows, dim=-2)  # (B, H, n, D)
        mask = _rows(self.masks, query, torch.ones, torch.bool)
        bias = _rows(self.biases, query, torch.zeros, query.dtype)
        out = checked_stats(
            query, self.key, self.value, mask, bias, False, self.scale, names, spans, self.softcap
        )
        return out.stats


def _rows(rows: list[Tensor | None], query: Tensor, fill, dtype: torch.dtype) -> Tensor | None:
    """One ``(B, H|1, n, K)`` tensor of the steps' rows; ``fill`` stands in for a missing one."""
    if all(row is None for row in rows):
        return None
    present = [row.reshape(*([1] * (4 - row.dim())), *row.shape) for row in rows if row is not None]
    heads = max(row.shape[1] for row in present)
    shape = (query.shape[0], heads, 1, present[0].shape[-1])
    full = [
        fill(shape, dtype=dtype, device=query.device)
        if row is None
        else row.reshape(*([1] * (4 - row.dim())), *row.shape).expand(shape)
        for row in rows
    ]
    return torch.cat(full, dim=-2)
