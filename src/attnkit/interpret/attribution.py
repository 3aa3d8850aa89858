"""Input attributions to set attention-based explanations against.

Every function explains a classifier given as ``forward(embeddings, mask) -> logits``:
``embeddings`` ``(B, N, E)`` are the token embeddings, ``mask`` ``(B, N)`` is ``True`` for tokens
the model may read, and ``logits`` are ``(B, C)``. Scores are per token, ``(B, N)``, zero where
``mask`` is ``False``; larger means more important for the ``target`` class.

- :func:`gradient_x_input`: ``Σ_e x_ne · ∂y/∂x_ne`` (Shrikumar et al. 2016; Denil et al. 2014);
- :func:`integrated_gradients`: path integral from a zero baseline (Sundararajan et al. 2017),
  computed with captum;
- :func:`leave_one_out`: drop in the target's probability when the token is hidden from the
  model (Li et al. 2016).

Each registered explanation method declares whether its scores are **signed** (:data:`SIGNED`):
the three above are (a token can push towards or away from the target), attention weights and
what is built from them (rollout, the positive part of relevance) are not. Rankings compare them
over magnitudes by default (:data:`attnkit.interpret.faithfulness.CONVENTIONS`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "SIGNED",
    "Classifier",
    "gradient_x_input",
    "integrated_gradients",
    "is_signed",
    "leave_one_out",
]

Classifier = Callable[[Tensor, Tensor], Tensor]

SIGNED: dict[str, bool] = {}  # filled by attnkit.interpret.methods.register_method
"""Whether each registered explanation method's scores carry a sign, by name: the sign
convention is declared where the method is registered
(:func:`attnkit.interpret.methods.register_method`; every built-in is registered when
:mod:`attnkit.interpret` is imported)."""


def is_signed(method: str, scores: Tensor | None = None) -> bool:
    """Whether ``method``'s scores are signed: :data:`SIGNED`'s entry, else (a method attnkit
    does not know) whether ``scores`` hold a negative value."""
    if method in SIGNED:
        return SIGNED[method]
    if scores is None:
        raise ValueError(f"method {method!r} is not in SIGNED {sorted(SIGNED)}; pass its scores")
    return bool((scores < 0).any())


def _check(embeddings: Tensor, mask: Tensor, target: Tensor) -> None:
    if embeddings.dim() != 3:
        raise ValueError(f"embeddings must be (B, N, E), got {tuple(embeddings.shape)}")
    if mask.shape != embeddings.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be boolean (B, N) = {tuple(embeddings.shape[:2])}, got "
            f"{tuple(mask.shape)} {mask.dtype}"
        )
    if target.shape != embeddings.shape[:1]:
        raise ValueError(f"target must be (B,) class indices, got {tuple(target.shape)}")


def _target_logit(forward: Classifier, embeddings: Tensor, mask: Tensor, target: Tensor) -> Tensor:
    return forward(embeddings, mask).gather(1, target[:, None]).squeeze(1)  # (B,)


def gradient_x_input(
    forward: Classifier, embeddings: Tensor, mask: Tensor, target: Tensor
) -> Tensor:
    """Gradient × input of the target logit, summed over the embedding: ``(B, N)``."""
    _check(embeddings, mask, target)
    inputs = embeddings.detach().requires_grad_()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_target_logit(forward, inputs, mask, target).sum(), inputs)
    return (grad * inputs.detach()).sum(-1) * mask


def integrated_gradients(
    forward: Classifier, embeddings: Tensor, mask: Tensor, target: Tensor, steps: int = 32
) -> Tensor:
    """Integrated gradients of the target logit from the all-zero embedding: ``(B, N)``."""
    from captum.attr import IntegratedGradients

    _check(embeddings, mask, target)
    method = IntegratedGradients(lambda x, m: forward(x, m))
    attributions = method.attribute(
        embeddings.detach(),
        baselines=torch.zeros_like(embeddings),
        target=target,
        additional_forward_args=(mask,),
        n_steps=steps,
    )
    return attributions.sum(-1) * mask


def leave_one_out(forward: Classifier, embeddings: Tensor, mask: Tensor, target: Tensor) -> Tensor:
    """Probability drop of the target when each token alone is masked out: ``(B, N)``.

    Runs one forward per token position (batched over examples).
    """
    _check(embeddings, mask, target)
    with torch.no_grad():
        full = forward(embeddings, mask).softmax(-1).gather(1, target[:, None]).squeeze(1)
        scores = torch.zeros(mask.shape, dtype=full.dtype, device=full.device)
        for position in range(mask.shape[1]):
            hidden = mask.clone()
            hidden[:, position] = False
            probs = forward(embeddings, hidden).softmax(-1)
            scores[:, position] = full - probs.gather(1, target[:, None]).squeeze(1)
    return scores * mask
