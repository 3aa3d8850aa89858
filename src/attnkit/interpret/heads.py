"""What each attention head does: descriptive statistics and simple head types.

Per layer and head, averaged over examples and (allowed) queries:

- ``entropy``: of each query's weights (nats); low means focused;
- ``distance``: mean ``|i - j|`` under the weights, the head's reach (Clark et al. 2019);
- ``sink``: weight on the first token (Xiao et al. 2024);
- ``previous``: weight on the token just before the query.

A head is a *previous-token head* or a *first-token head* when that score passes a threshold
(Clark et al. 2019, "What Does BERT Look At?").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["HeadStats", "head_stats"]


@dataclass(frozen=True)
class HeadStats:
    """Per-head statistics, each ``(L, H)``, for the layers named in ``layers``."""

    layers: list[str]
    entropy: Tensor
    distance: Tensor
    sink: Tensor
    previous: Tensor

    def heads_where(self, score: str, threshold: float = 0.5) -> list[tuple[str, int]]:
        """``(layer, head)`` pairs whose ``score`` (``"sink"`` or ``"previous"``) exceeds it."""
        if score not in ("sink", "previous"):
            raise ValueError(f"score must be 'sink' or 'previous', got {score!r}")
        values = getattr(self, score)
        return [(self.layers[i], int(h)) for i, h in (values > threshold).nonzero().tolist()]


def head_stats(
    weights: Sequence[Tensor] | Mapping[str, Tensor], query_mask: Tensor | None = None
) -> HeadStats:
    """Describe every head of self-attention weights.

    Args:
        weights: ``(B, H, N, N)`` per layer, as a list or as ``capture(...).weights``.
        query_mask: ``(B, N)`` boolean, ``True`` for queries to average over (real tokens).

    Returns:
        :class:`HeadStats` with ``(L, H)`` tensors.
    """
    named = dict(weights) if isinstance(weights, Mapping) else dict(enumerate(weights))
    if not named:
        raise ValueError("weights must hold at least one layer")
    rows = {"entropy": [], "distance": [], "sink": [], "previous": []}
    for name, layer in named.items():
        if layer.dim() != 4 or layer.shape[-1] != layer.shape[-2]:
            raise ValueError(f"layer {name!r} must be (B, H, N, N), got {tuple(layer.shape)}")
        batch, _, n, _ = layer.shape
        keep = torch.ones(batch, n, dtype=torch.bool) if query_mask is None else query_mask.bool()
        if keep.shape != (batch, n):
            raise ValueError(f"query_mask must be (B, N) = {(batch, n)}, got {tuple(keep.shape)}")
        keep = keep[:, None, :].to(layer.device)  # (B, 1, N)
        positions = torch.arange(n, device=layer.device, dtype=layer.dtype)
        distance = (positions[:, None] - positions[None, :]).abs()  # (N, N)
        per_query = {
            "entropy": -(layer * layer.clamp_min(1e-45).log()).sum(-1),
            "distance": (layer * distance).sum(-1),
            "sink": layer[..., 0],
            "previous": torch.cat(
                [torch.zeros_like(layer[..., :1, 0]), layer.diagonal(-1, dim1=-2, dim2=-1)], -1
            ),
        }  # each (B, H, N)
        for key, value in per_query.items():
            mask = keep if key != "previous" else keep & (positions > 0)
            count = mask.sum(dim=(0, 2)).clamp_min(1)  # (1,) per head broadcast
            rows[key].append((value * mask).sum(dim=(0, 2)) / count)
    return HeadStats(
        layers=[str(name) for name in named], **{k: torch.stack(v) for k, v in rows.items()}
    )
