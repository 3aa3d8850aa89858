"""Training helpers for hard attention (:mod:`attnkit.attention.hard`).

- :class:`MovingAverageBaseline` and :func:`reinforce_loss`: the score-function (REINFORCE) loss
  with a moving-average baseline and an entropy bonus (Williams 1992; Xu et al. 2015).
- :func:`anneal_temperature`: the Gumbel-softmax temperature schedule (Jang et al. 2017).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MovingAverageBaseline", "anneal_temperature", "reinforce_loss"]


class MovingAverageBaseline(nn.Module):
    """Exponential moving average of the reward, ``b <- m·b + (1 - m)·mean(reward)``.

    The baseline of Xu et al. 2015 (their ``b_k = 0.9 b_{k-1} + 0.1 log p(y | s_k, a)``).
    Calling it returns the baseline *before* this batch is folded in, so the baseline does not
    depend on the samples it is subtracted from and the gradient stays unbiased; it updates only
    in training mode. The first call initializes it to the batch mean.

    Args:
        momentum: ``m`` in ``[0, 1)``.
    """

    def __init__(self, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("value", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def forward(self, reward: Tensor) -> Tensor:
        """Return the baseline (a scalar tensor) for ``reward`` of any shape, then update it."""
        mean = reward.detach().float().mean()
        current = torch.where(self.initialized, self.value, mean)
        if self.training:
            self.value.copy_(self.momentum * current + (1.0 - self.momentum) * mean)
            self.initialized.fill_(True)
        return current.clone()


def reinforce_loss(
    log_prob: Tensor,
    reward: Tensor,
    baseline: Tensor | float = 0.0,
    entropy: Tensor | None = None,
    entropy_weight: float = 0.0,
) -> Tensor:
    """Surrogate loss whose gradient is the REINFORCE estimate (Williams 1992; Xu et al. 2015).

    ``loss = -mean((reward - baseline) · log_prob) - entropy_weight · mean(entropy)``, with the
    reward and baseline detached: minimizing it follows ``E[(r - b) ∇log p] + λ_H ∇H``, an
    unbiased estimate of the gradient of the expected reward (plus the entropy bonus).

    Args:
        log_prob: ``(B,)`` or ``(B, Q)`` (e.g. ``out.log_prob``, or one column per glimpse).
        reward: ``(B,)`` (one reward per example, shared by its queries) or ``log_prob``'s shape.
        baseline: a scalar (e.g. from :class:`MovingAverageBaseline`) or a tensor broadcastable
            to ``reward`` (a learned per-example baseline).
        entropy: shaped like ``log_prob``; needed when ``entropy_weight > 0``.
        entropy_weight: ``λ_H >= 0``.

    Returns:
        A scalar tensor.
    """
    if not isinstance(log_prob, Tensor) or not isinstance(reward, Tensor):
        raise TypeError("log_prob and reward must be torch.Tensors")
    if reward.shape != log_prob.shape and reward.shape != log_prob.shape[:1]:
        raise ValueError(
            f"reward must be (B,) = {tuple(log_prob.shape[:1])} or log_prob's shape "
            f"{tuple(log_prob.shape)}, got shape {tuple(reward.shape)}"
        )
    if entropy_weight < 0:
        raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
    advantage = (reward - baseline).detach()
    advantage = advantage.reshape(*advantage.shape, *([1] * (log_prob.ndim - advantage.ndim)))
    loss = -(advantage * log_prob).mean()
    if entropy_weight > 0:
        if entropy is None:
            raise ValueError("entropy must be given when entropy_weight > 0")
        loss = loss - entropy_weight * entropy.mean()
    return loss


def anneal_temperature(
    step: int, start: float = 1.0, end: float = 0.5, rate: float = 1e-4, every: int = 1
) -> float:
    """Gumbel-softmax temperature at ``step``: ``max(end, start · exp(-rate · t))``.

    The schedule of Jang et al. 2017 (Sec. 4: ``τ = max(0.5, exp(-r t))``, updated every ``N``
    steps), with ``t`` the step rounded down to a multiple of ``every``. Set it with
    ``hard.temperature = anneal_temperature(step)``.
    """
    if start <= 0 or end <= 0:
        raise ValueError(f"start and end must be > 0, got {start} and {end}")
    if rate < 0 or every < 1:
        raise ValueError(f"rate must be >= 0 and every >= 1, got {rate} and {every}")
    t = (step // every) * every
    return max(end, start * math.exp(-rate * t))
