"""Score functions as small modules with their parameters, behind a registry by name.

Each module maps queries ``(B, Q, Dq)`` and keys ``(B, K, Dk)`` to scores ``(B, Q, K)``; the
arithmetic lives in :mod:`attnkit.attention.functional`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnkit.attention import functional

__all__ = ["SCORES", "AdditiveScore", "DotScore", "GeneralScore", "ScaledDotScore", "make_score"]


class DotScore(nn.Module):
    """``q·k`` (Luong et al. 2015). Needs ``query_dim == key_dim``."""

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return functional.dot_score(query, keys)


class ScaledDotScore(nn.Module):
    """``q·k / sqrt(D)`` (Vaswani et al. 2017). Needs ``query_dim == key_dim``."""

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return functional.scaled_dot_score(query, keys)


class GeneralScore(nn.Module):
    """``qᵀ W k`` with a learned ``W`` of shape ``(Dq, Dk)`` (Luong et al. 2015, "general")."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(query_dim, key_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return functional.general_score(query, keys, self.weight)


class AdditiveScore(nn.Module):
    """``vᵀ tanh(W q + U k + b)`` with hidden size ``A`` (Bahdanau et al. 2015)."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = key_dim if hidden_dim is None else hidden_dim
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim}")
        self.query_weight = nn.Parameter(torch.empty(hidden_dim, query_dim))  # W
        self.key_weight = nn.Parameter(torch.empty(hidden_dim, key_dim))  # U
        self.bias = nn.Parameter(torch.zeros(hidden_dim))  # b
        self.v = nn.Parameter(torch.empty(hidden_dim))
        nn.init.xavier_uniform_(self.query_weight)
        nn.init.xavier_uniform_(self.key_weight)
        nn.init.uniform_(self.v, -1.0 / math.sqrt(hidden_dim), 1.0 / math.sqrt(hidden_dim))

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return functional.additive_score(
            query, keys, self.query_weight, self.key_weight, self.v, self.bias
        )


SCORES: dict[str, type[nn.Module]] = {
    "dot": DotScore,
    "scaled_dot": ScaledDotScore,
    "general": GeneralScore,
    "additive": AdditiveScore,
}


def make_score(name: str, query_dim: int, key_dim: int, hidden_dim: int | None = None) -> nn.Module:
    """Build the score module called ``name`` (one of :data:`SCORES`).

    ``hidden_dim`` is the additive score's hidden size (default ``key_dim``); other scores take
    none and raise if it is given.
    """
    if name not in SCORES:
        raise ValueError(f"score must be one of {sorted(SCORES)}, got {name!r}")
    if query_dim < 1 or key_dim < 1:
        raise ValueError(f"query_dim and key_dim must be positive, got {query_dim} and {key_dim}")
    if name in ("dot", "scaled_dot") and query_dim != key_dim:
        raise ValueError(
            f"score {name!r} needs query_dim == key_dim, got {query_dim} and {key_dim}; "
            "use 'general' or 'additive' for different sizes"
        )
    if name == "additive":
        return AdditiveScore(query_dim, key_dim, hidden_dim)
    if hidden_dim is not None:
        raise ValueError(f"hidden_dim is for the 'additive' score only, got score={name!r}")
    if name == "general":
        return GeneralScore(query_dim, key_dim)
    return SCORES[name]()
