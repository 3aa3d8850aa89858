"""Gradient-weighted attention: relevance (Chefer et al. 2021) and head importance (Michel 2019).

Both read the recorded weights ``A`` and the gradient ``∇A`` of a target with respect to them
(``attnkit.capture(model, grad=True)`` records both).

- Relevance, the generic rule for self-attention (Chefer, Gur & Wolf 2021, "Generic
  Attention-model Explainability", eq. 6–7): ``R = I``, then layer by layer
  ``R ← R + Ā R`` with ``Ā = mean_h (∇A ⊙ A)⁺``.
- Head importance (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?"):
  ``I_h = E_x |Σ_{q,k} A_h ⊙ ∂L/∂A_h|``, which equals ``E_x |∂L/∂ξ_h|`` for a mask ``ξ_h``
  multiplying the head's output; normalized per layer by its L2 norm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["HeadImportance", "head_importance", "kept_parameter_grads", "relevance"]


def _as_list(x: Sequence[Tensor] | Mapping[str, Tensor]) -> list[Tensor]:
    return list(x.values()) if isinstance(x, Mapping) else list(x)


def relevance(
    weights: Sequence[Tensor] | Mapping[str, Tensor],
    grads: Sequence[Tensor] | Mapping[str, Tensor],
) -> Tensor:
    """Chefer et al.'s relevance map for self-attention layers.

    Args:
        weights: ``(B, H, N, N)`` per layer, in forward order (``rec.weights``).
        grads: the gradients with respect to them, same shapes (``rec.grads``).

    Returns:
        ``(B, N, N)``: row ``i`` is the relevance of each input token for token ``i``'s output
        (for a classifier reading token 0, row 0).
    """
    weights, grads = _as_list(weights), _as_list(grads)
    if not weights or len(weights) != len(grads):
        raise ValueError(
            f"weights and grads must be non-empty and of equal length, got {len(weights)} "
            f"and {len(grads)} layers"
        )
    batch, _, n, _ = weights[0].shape
    result = torch.eye(n, dtype=weights[0].dtype, device=weights[0].device).repeat(batch, 1, 1)
    for i, (a, g) in enumerate(zip(weights, grads, strict=True)):
        if a.shape != g.shape or a.shape[-1] != a.shape[-2] or a.shape[-1] != n:
            raise ValueError(
                f"layer {i}: weights {tuple(a.shape)} and grads {tuple(g.shape)} must both be "
                f"(B, H, {n}, {n})"
            )
        fused = (g * a).clamp_min(0).mean(dim=1)  # (B, N, N)
        result = result + fused @ result
    return result


@contextmanager
def kept_parameter_grads(model: nn.Module) -> Iterator[None]:
    """Run ``backward()`` inside without touching the ``.grad`` of ``model``'s parameters."""
    parameters = list(model.parameters())
    saved = [p.grad for p in parameters]  # set aside, so backward() cannot add to them
    for parameter in parameters:
        parameter.grad = None
    try:
        yield
    finally:
        for parameter, grad in zip(parameters, saved, strict=True):
            parameter.grad = grad


@dataclass(frozen=True)
class HeadImportance:
    """Importance ``(L, H)`` per layer and head (rows normalized to unit L2 norm if asked)."""

    layers: list[str]
    scores: Tensor

    def ranking(self) -> list[tuple[str, int]]:
        """``(layer, head)`` from least to most important: the order to prune in."""
        order = self.scores.flatten().argsort().tolist()
        heads = self.scores.shape[1]
        return [(self.layers[i // heads], i % heads) for i in order]


def head_importance(
    model: nn.Module,
    batches: Iterable[object],
    loss_fn: Callable[[nn.Module, object], Tensor],
    layers: Sequence[str] | None = None,
    normalize: bool = True,
) -> HeadImportance:
    """Michel et al.'s head importance, accumulated over ``batches``.

    Args:
        model: a model :func:`attnkit.capture` supports.
        batches: anything ``loss_fn`` takes, one item per step.
        loss_fn: ``loss_fn(model, batch)`` → a scalar loss (a sum over examples keeps each
            example's gradient separate, as the definition needs).
        layers: layer names to score; default all attention layers.
        normalize: divide each layer's scores by their L2 norm (as in the paper).

    The model's parameter gradients are left as they were.
    """
    from attnkit.recording import capture

    totals: dict[str, Tensor] = {}
    count = 0
    with kept_parameter_grads(model):
        for batch in batches:
            with torch.enable_grad(), capture(model, grad=True, layers=layers) as rec:
                loss_fn(model, batch).backward()
            weights, grads = rec.weights, rec.grads  # each joins every layer's calls
            for layer, layer_weights in weights.items():
                per_example = (layer_weights * grads[layer]).sum(dim=(-1, -2)).abs()  # (B, H)
                totals[layer] = totals.get(layer, 0) + per_example.sum(0)
            count += next(iter(weights.values())).shape[0]
    if not count:
        raise ValueError("batches must hold at least one batch")
    scores = torch.stack(list(totals.values())) / count  # (L, H)
    if normalize:
        scores = scores / scores.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return HeadImportance(layers=list(totals), scores=scores)
