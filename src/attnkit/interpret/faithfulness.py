"""Do explanations agree, and do they point at what the model uses?

- :func:`rank_agreement`: Kendall's τ between two importance rankings of the tokens of each
  example, with its p-value (Jain & Wallace 2019, who found attention often disagrees with
  gradient and leave-one-out importance).
- :func:`eraser`: comprehensiveness and sufficiency (DeYoung et al. 2020, ERASER) with their
  area over the perturbation curve (AOPC) over bins of the top-ranked tokens.

Models are given as in :mod:`attnkit.interpret.attribution`: ``forward(embeddings, mask)``.
Removing a token means masking it out, so the model sees a shorter input rather than an
out-of-distribution replacement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.interpret.attribution import Classifier

__all__ = ["BINS", "EraserScores", "RankAgreement", "eraser", "rank_agreement"]

BINS = (0.01, 0.05, 0.10, 0.20, 0.50)  # fractions of tokens removed or kept (ERASER)


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's τ-b per example (``(B,)``, NaN where undefined) and its mean and p-values."""

    tau: Tensor
    p_value: Tensor

    @property
    def mean_tau(self) -> float:
        return float(self.tau.nanmean())


def rank_agreement(first: Tensor, second: Tensor, mask: Tensor) -> RankAgreement:
    """Kendall's τ-b between two ``(B, N)`` importance scores over each example's tokens."""
    from scipy.stats import kendalltau

    if first.shape != second.shape or first.shape != mask.shape:
        raise ValueError(
            f"first, second and mask must share one (B, N) shape, got {tuple(first.shape)}, "
            f"{tuple(second.shape)} and {tuple(mask.shape)}"
        )
    taus, p_values = [], []
    for a, b, keep in zip(first.detach().cpu(), second.detach().cpu(), mask.cpu(), strict=True):
        result = kendalltau(a[keep].numpy(), b[keep].numpy())
        taus.append(result.statistic)
        p_values.append(result.pvalue)
    return RankAgreement(
        torch.tensor(taus, dtype=torch.float64), torch.tensor(p_values, dtype=torch.float64)
    )


@dataclass(frozen=True)
class EraserScores:
    """Comprehensiveness and sufficiency per bin (``(len(bins),)``) and their AOPC."""

    bins: tuple[float, ...]
    comprehensiveness: Tensor
    sufficiency: Tensor

    @property
    def comprehensiveness_aopc(self) -> float:
        """Mean probability drop when the top tokens are removed: higher is more faithful."""
        return float(self.comprehensiveness.mean())

    @property
    def sufficiency_aopc(self) -> float:
        """Mean probability drop when only the top tokens are kept: lower is more faithful."""
        return float(self.sufficiency.mean())


def _top_tokens(importance: Tensor, mask: Tensor, fraction: float) -> Tensor:
    """``(B, N)`` boolean: the ``ceil(fraction · n)`` most important real tokens of each row."""
    ranked = importance.masked_fill(~mask, float("-inf")).argsort(dim=-1, descending=True)
    counts = (mask.sum(-1).float() * fraction).ceil().long().clamp_min(1)  # (B,)
    ranks = torch.empty_like(ranked).scatter_(
        -1, ranked, torch.arange(mask.shape[1]).expand_as(ranked)
    )
    return (ranks < counts[:, None]) & mask


def eraser(
    forward: Classifier,
    embeddings: Tensor,
    mask: Tensor,
    target: Tensor,
    importance: Tensor,
    bins: Sequence[float] = BINS,
) -> EraserScores:
    """ERASER comprehensiveness and sufficiency of an explanation, averaged over examples.

    Args:
        forward, embeddings, mask, target: the classifier and its input, as in attribution.
        importance: ``(B, N)`` token scores of the explanation under test.
        bins: fractions of each example's tokens counted as its top tokens.
    """
    if importance.shape != mask.shape:
        raise ValueError(
            f"importance must be (B, N) = {tuple(mask.shape)}, got {tuple(importance.shape)}"
        )
    if not bins or not all(0 < b <= 1 for b in bins):
        raise ValueError(f"bins must be fractions in (0, 1], got {tuple(bins)}")
    with torch.no_grad():

        def prob(visible: Tensor) -> Tensor:
            return forward(embeddings, visible).softmax(-1).gather(1, target[:, None]).squeeze(1)

        full = prob(mask)
        comprehensive, sufficient = [], []
        for fraction in bins:
            top = _top_tokens(importance, mask, fraction)
            comprehensive.append((full - prob(mask & ~top)).mean())
            sufficient.append((full - prob(top)).mean())
    return EraserScores(tuple(bins), torch.stack(comprehensive), torch.stack(sufficient))
