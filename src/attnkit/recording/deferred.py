"""Decoding steps over cached keys, their statistics computed together.

During generation each decoding step attends with one query over keys the cache already held:

- the *same* keys at every step, for an encoder-decoder's cross-attention (the encoder's output,
  projected once, then reused from the cache);
- the keys of the step before with *one more* appended, for self-attention over a growing cache
  (transformers' ``DynamicLayer`` concatenates: the tensors it held stay as they were).

The statistics of those steps need not be computed one step at a time. A block opened with
``deferred=True`` keeps each step's query row (and mask or bias row), the step itself running on
PyTorch's fused kernel with nothing else computed, and computes the statistics of all the rows
in one kernel call per layer, when the block ends or its statistics are read: over the same keys,
or over the last step's keys with causal masking (row ``i`` of ``n`` sees the keys its own step
saw). The numbers are those of the step-by-step path: the same fused kernel, more rows at once.

Rows wait only while each step's keys are, by object identity and unchanged version, the keys the
rows waiting hold (or those with one key appended); any other call (a beam reordering the cache,
a new generation, a window that slides) computes the waiting rows first. Keys changed in place
while rows wait (a static cache reset between two ``generate()`` calls of one block) cannot be
read back: that is reported as an error, never computed over the new values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.recording.stats import Span, checked_stats

__all__ = ["Waiting"]


class Waiting:
    """The query rows of one layer waiting for their statistics.

    Args:
        key: ``(B, Hkv, K, D)``, the keys of the first row's step.
        value: ``(B, Hkv, K, Dv)``.
        previous: the key and value tensors that step's keys extend: ``key`` and ``value``
            themselves (the same keys at every step), or the previous step's (a growing cache).
        scale: score scale (``None``: ``D ** -0.5``).
        softcap: logit soft-cap, or ``None``.
    """

    def __init__(
        self,
        key: Tensor,
        value: Tensor,
        previous: tuple[Tensor, Tensor],
        scale: float | None,
        softcap: float | None,
    ) -> None:
        self.grows = previous[0] is not key  # else the same keys at every step
        self.key, self.value, self.scale, self.softcap = key, value, scale, softcap
        self.versions = (key._version, value._version)
        self.rows: list[Tensor] = []  # (B, H, 1, D) each
        self.masks: list[Tensor | None] = []  # (B|1, H|1, 1, K_i) boolean each, or None
        self.biases: list[Tensor | None] = []  # (B|1, H|1, 1, K_i) float each, or None

    def takes(
        self,
        key: Tensor,
        value: Tensor,
        previous: tuple[Tensor, Tensor],
        scale: float | None,
        softcap: float | None,
    ) -> bool:
        """Whether a step over ``key`` (extending ``previous``) can wait with these rows."""
        if not (
            previous[0] is self.key
            and previous[1] is self.value
            and (self.key._version, self.value._version) == self.versions
            and scale == self.scale
            and softcap == self.softcap
        ):
            return False
        if not self.grows:
            return key is self.key and value is self.value
        return (
            key.shape[-2] == self.key.shape[-2] + 1
            and key.shape[:-2] == self.key.shape[:-2]
            and value.shape[:-2] == self.value.shape[:-2]
        )

    def add(
        self, row: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, bias: Tensor | None
    ) -> None:
        """Keep one step's query row ``(B, H, 1, D)``, its keys and its mask and bias rows."""
        self.key, self.value = key, value
        self.versions = (key._version, value._version)
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
                "the cached keys of a deferred capture block were changed in place (a static "
                "cache reset?) before their statistics were computed; open one "
                "capture(..., deferred=True) block per generate() call, or leave deferred off"
            )
        query = torch.cat(self.rows, dim=-2)  # (B, H, n, D)
        width = self.key.shape[-2]
        mask = _rows(self.masks, query, width, torch.ones, torch.bool, True)
        bias = _rows(self.biases, query, width, torch.zeros, query.dtype, 0.0)
        out = checked_stats(
            query, self.key, self.value, mask, bias, self.grows, self.scale, names, spans,
            self.softcap,
        )  # fmt: skip
        return out.stats


def _rows(
    rows: list[Tensor | None],
    query: Tensor,
    width: int,
    fill: Callable[..., Tensor],
    dtype: torch.dtype,
    pad: bool | float,
) -> Tensor | None:
    """``(B, H|1, n, width)``: the steps' rows, each padded on the right to ``width`` keys with
    ``pad`` (keys after a row's own step, which causal masking hides); ``fill`` stands in for a
    step without one."""
    if all(row is None for row in rows):
        return None
    # four axes each, leading ones added, padded to the last step's keys
    rows = [
        None if row is None
        else F.pad(row.reshape(*([1] * (4 - row.dim())), *row.shape), (0, width - row.shape[-1]),
                   value=pad)
        for row in rows
    ]  # fmt: skip
    shape = (query.shape[0], max(row.shape[1] for row in rows if row is not None), 1, width)
    full = [
        fill(shape, dtype=dtype, device=query.device) if row is None else row.expand(shape)
        for row in rows
    ]
    return torch.cat(full, dim=-2)
