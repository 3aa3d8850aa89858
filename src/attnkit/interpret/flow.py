"""Attention flow (Abnar & Zuidema 2020): attention as capacities, importance as max-flow.

The layers form a graph: node ``(l, i)`` is token ``i`` after layer ``l`` (``l = 0`` the input),
and an edge from ``(l - 1, j)`` to ``(l, i)`` has capacity ``Â_l[i, j]``, the residual-augmented
attention ``norm(A + I)`` with heads fused. The flow from input token ``j`` to output token ``i``
is the maximum flow from ``(0, j)`` to ``(L, i)``; each output token's flows are normalized to
sum to one. Unlike rollout, which multiplies weights along paths, flow is limited by the narrowest
cut, so it is less dominated by a few large products.

Max-flow runs in scipy's Dinic solver on integer capacities: weights are scaled by 2^24, so
each capacity is exact to ``6e-8``. Each output token costs ``N`` solves; ask only for the
``targets`` you need (for a classifier, the token it reads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from attnkit.interpret.rollout import fuse_heads

__all__ = ["RESOLUTION_BITS", "flow"]

RESOLUTION_BITS = 24  # capacities are rounded to multiples of 2^-24


def _layered_graph(mixing: list[np.ndarray]):
    """The CSR capacity matrix of the layer graph, ``((L + 1) N, (L + 1) N)`` int32."""
    from scipy.sparse import csr_matrix

    n = mixing[0].shape[0]
    rows, cols, caps = [], [], []
    for layer, matrix in enumerate(mixing):
        scaled = np.rint(matrix * 2**RESOLUTION_BITS).astype(np.int32)  # [i, j]: j -> i
        target, source = np.nonzero(scaled)
        rows.append(layer * n + source)
        cols.append((layer + 1) * n + target)
        caps.append(scaled[target, source])
    size = (len(mixing) + 1) * n
    return csr_matrix(
        (np.concatenate(caps), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size)
    )


def flow(
    weights: Sequence[Tensor] | Mapping[str, Tensor],
    head_fusion: str = "mean",
    targets: Sequence[int] | None = None,
) -> Tensor:
    """Attention flow from every input token to each output token in ``targets``.

    Args:
        weights: ``(B, H, N, N)`` self-attention weights per layer, in forward order.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        targets: output token indices (default all ``N``).

    Returns:
        ``(B, T, N)``: row ``t`` is how input tokens flow into output token ``targets[t]``,
        normalized to sum to one.
    """
    from scipy.sparse.csgraph import maximum_flow

    layers = list(weights.values()) if isinstance(weights, Mapping) else list(weights)
    if not layers:
        raise ValueError("weights must hold at least one layer")
    batch, _, n, _ = layers[0].shape
    if any(layer.shape != layers[0].shape or layer.shape[-1] != n for layer in layers):
        raise ValueError("every layer must be self-attention weights (B, H, N, N) of one shape")
    targets = list(range(n)) if targets is None else list(targets)
    if not all(0 <= t < n for t in targets):
        raise ValueError(f"targets must be token indices in [0, {n}), got {targets}")
    sink_offset = len(layers) * n
    result = torch.zeros(batch, len(targets), n, dtype=torch.float64)
    for b in range(batch):
        mixing = []
        for layer in layers:
            fused = fuse_heads(layer[b : b + 1].double(), head_fusion)[0]
            fused = fused + torch.eye(n, dtype=fused.dtype, device=fused.device)
            mixing.append((fused / fused.sum(-1, keepdim=True)).cpu().numpy())
        graph = _layered_graph(mixing)
        for row, target in enumerate(targets):
            for source in range(n):
                value = maximum_flow(graph, source, sink_offset + target, method="dinic")
                result[b, row, source] = value.flow_value / 2**RESOLUTION_BITS
    total = result.sum(-1, keepdim=True)
    return (result / total.clamp_min(1e-30)).to(layers[0].dtype)
