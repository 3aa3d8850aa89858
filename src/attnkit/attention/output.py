"""The one result type every attention mechanism in attnkit returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionOutput:
    """What an attention call computed.

    Attributes:
        output: the attended values, ``(B, Q, Dv)`` (``(B, Dv)`` for a single query).
        weights: the attention distribution when it was asked for or is free to have:
            ``(B, H, Q, K)`` for multi-head mechanisms, ``(B, Q, K)`` (``(B, K)`` for a single
            query) for single-head ones; ``None`` when the backend did not materialize it.
            Weights are taken *before* attention dropout, so they always sum to one over the
            allowed keys (or are all zero when a query may attend to no key).
        log_prob: log-probability of the keys a stochastic mechanism selected, ``(B, Q)``
            (``(B,)`` for a single query); for score-function (REINFORCE) losses.
        entropy: entropy of the distribution a stochastic mechanism sampled from, shaped like
            ``log_prob``.
        stats: per-query statistics of the weights by name, each ``(B, H, Q)``, from backends
            that stream them instead of materializing the weights.
    """

    output: torch.Tensor
    weights: torch.Tensor | None = None
    log_prob: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] | None = None
