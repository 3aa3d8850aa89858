"""Head pruning by importance, with the metric curve (Michel et al. 2019, "Are Sixteen Heads
Really Better than One?", §4).

Heads are removed from least to most important (:meth:`HeadImportance.ranking`); after each
step the user's metric is measured on the pruned model. A pruned head's attention weights are
set to zero through :func:`attnkit.recording.intervene`, so its output is zero, which is what the
paper's head mask ``ξ_h = 0`` does, on any model capture supports, without editing its code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnkit.interpret.relevance_maps import HeadImportance
from attnkit.recording import intervene

__all__ = ["PruningCurve", "prune_heads", "pruned"]


@dataclass(frozen=True)
class PruningCurve:
    """The metric after pruning ``counts[i]`` heads, in pruning ``order``."""

    order: list[tuple[str, int]]  # (layer, head), least important first
    counts: list[int]
    metric: list[float]

    def removable(self, tolerance: float) -> int:
        """The most heads pruned while the metric stays within ``tolerance`` of the full model's
        (higher is better: a metric of at least ``metric[0] - tolerance``)."""
        floor = self.metric[0] - tolerance
        pairs = zip(self.counts, self.metric, strict=True)
        return max(count for count, value in pairs if value >= floor)


def pruned(model: nn.Module, heads: Sequence[tuple[str, int]]):
    """A context manager in which the attention of ``heads`` (``(layer, head)`` pairs) is zero."""
    by_layer: dict[str, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def edit(layer: str, weights: Tensor) -> Tensor:
        drop = by_layer.get(layer)
        if not drop:
            return weights
        if max(drop) >= weights.shape[1]:
            raise ValueError(
                f"head {max(drop)} of layer {layer!r} does not exist: it has {weights.shape[1]}"
            )
        keep = torch.ones(weights.shape[1], dtype=weights.dtype, device=weights.device)
        keep[drop] = 0
        return weights * keep[:, None, None]

    return intervene(model, edit, layers=list(by_layer) or None)


def prune_heads(
    model: nn.Module,
    importance: HeadImportance,
    evaluate: Callable[[nn.Module], float],
    counts: Sequence[int] | None = None,
) -> PruningCurve:
    """Prune heads from least to most important and measure ``evaluate(model)`` at each step.

    Args:
        model: a model :func:`attnkit.capture` supports; restored after each measurement.
        importance: e.g. from :func:`attnkit.interpret.head_importance`.
        evaluate: the metric (higher is better, e.g. accuracy) on held-out data.
        counts: how many heads to have pruned at each measurement; default 0, 1, ..., all.

    Returns:
        A :class:`PruningCurve`; ``curve.removable(0.01)`` tells how many heads can go before
        the metric drops by more than 0.01.
    """
    order = importance.ranking()
    total = len(order)
    counts = list(range(total + 1)) if counts is None else [int(c) for c in counts]
    if not counts or any(not 0 <= c <= total for c in counts):
        raise ValueError(
            f"counts must be a non-empty list of integers in [0, {total}], got {counts}"
        )
    counts = sorted(set(counts) | {0})
    metric = []
    for count in counts:
        with pruned(model, order[:count]):
            metric.append(float(evaluate(model)))
    return PruningCurve(order=order, counts=counts, metric=metric)
