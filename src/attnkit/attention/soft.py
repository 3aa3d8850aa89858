"""Soft attention: a set of queries reads a memory through a differentiable weighted average."""

from __future__ import annotations

from torch import Tensor, nn

from attnkit.attention.functional import NORMALIZERS, memory_inputs, normalize, prepare_mask
from attnkit.attention.output import AttentionOutput
from attnkit.attention.scores import make_score

__all__ = ["SoftAttention"]


class SoftAttention(nn.Module):
    """Soft attention over a memory (Bahdanau et al. 2015; Luong et al. 2015).

    ``weights = normalize(score(q, k) / temperature)`` over the keys, ``output = weights @ values``.

    Args:
        query_dim: ``Dq``.
        key_dim: ``Dk``.
        score: ``"additive"`` (Bahdanau), ``"dot"``, ``"scaled_dot"`` or ``"general"`` (Luong).
        normalizer: ``"softmax"``, ``"sparsemax"`` or ``"entmax15"`` (the sparse ones give exact
            zeros to low-scoring keys).
        temperature: divides the scores before normalizing; > 0.
        hidden_dim: hidden size of the additive score (default ``key_dim``).

    Example::

        att = SoftAttention(query_dim=16, key_dim=32, score="additive")
        out = att(query, keys)   # query (B, Q, 16) or (B, 16); keys (B, K, 32)
        out.output               # (B, Q, 32), or (B, 32) for a single query
        out.weights              # (B, Q, K), or (B, K)
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        score: str = "additive",
        normalizer: str = "softmax",
        temperature: float = 1.0,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {sorted(NORMALIZERS)}, got {normalizer!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.query_dim = query_dim
        self.key_dim = key_dim
        self.score_name = score
        self.score = make_score(score, query_dim, key_dim, hidden_dim)
        self.normalizer = normalizer
        self.temperature = temperature

    def extra_repr(self) -> str:
        return (
            f"query_dim={self.query_dim}, key_dim={self.key_dim}, score={self.score_name!r}, "
            f"normalizer={self.normalizer!r}, temperature={self.temperature}"
        )

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> AttentionOutput:
        """Attend from ``query`` over ``keys``.

        Args:
            query: ``(B, Q, Dq)``, or ``(B, Dq)`` for one query per example.
            keys: ``(B, K, Dk)``.
            values: ``(B, K, Dv)``; defaults to ``keys``.
            mask: boolean, ``True`` = may attend: ``(B, K)`` key padding or ``(B, Q, K)``.

        Returns:
            ``AttentionOutput(output (B, Q, Dv), weights (B, Q, K))``, without the ``Q``
            dimension for a single query.
        """
        query, values, single = memory_inputs(query, keys, values, self.query_dim, self.key_dim)
        scores = self.score(query, keys)  # (B, Q, K)
        mask = prepare_mask(mask, scores.shape)
        weights = normalize(scores, mask, self.normalizer, self.temperature)
        output = weights @ values  # (B, Q, Dv)
        if single:
            return AttentionOutput(output.squeeze(1), weights.squeeze(1))
        return AttentionOutput(output, weights)
