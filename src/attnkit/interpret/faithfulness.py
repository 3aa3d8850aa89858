"""Do explanations agree, and do they point at what the model uses?

- :func:`rank_agreement`: Kendall's τ-b between two importance rankings of the tokens of each
  example, with its p-value (Jain & Wallace 2019, who found attention often disagrees with
  gradient and leave-one-out importance). By default over magnitudes ``|score|``, the
  literature's convention (Jain & Wallace rank gradients and leave-one-out changes by size);
  ``convention="signed"`` ranks the scores as they are (see :data:`CONVENTIONS`).
- :func:`percentile_bootstrap`: a seeded percentile bootstrap over examples (Efron &
  Tibshirani 1993), for the intervals every verdict carries.
- :func:`eraser`: comprehensiveness and sufficiency (DeYoung et al. 2020, ERASER) with their
  area over the perturbation curve (AOPC) over bins of the top-ranked tokens.
- :func:`permutation_test` and :func:`adversarial_attention`: does the output change when the
  attention weights are shuffled, or replaced by very different ones (Jain & Wallace 2019)?

Models are given as in :mod:`attnkit.interpret.attribution`: ``forward(embeddings, mask)``.
Removing a token means masking it out, so the model sees a shorter input rather than an
out-of-distribution replacement.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from attnkit._moved import moved_name
from attnkit.interpret.attribution import Classifier

__all__ = [
    "BINS",
    "CONVENTIONS",
    "AdversarialResult",
    "EraserScores",
    "PermutationResult",
    "RankAgreement",
    "adversarial_attention",
    "eraser",
    "js_divergence",
    "percentile_bootstrap",
    "permutation_test",
    "permute_weights",
    "rank_agreement",
    "ranked",
    "total_variation",
]

BINS = (0.01, 0.05, 0.10, 0.20, 0.50)  # fractions of tokens removed or kept (ERASER)


CONVENTIONS = ("magnitude", "signed")
"""How token scores become a ranking: ``"magnitude"`` ranks ``|score|`` (a token that pushes
against the prediction is as important as one that pushes for it: Jain & Wallace 2019's
convention, the default everywhere), ``"signed"`` ranks the scores as they are (pushing for the
predicted class first). The two agree for unsigned methods (attention weights, rollout)."""


def ranked(scores: Tensor, convention: str = "magnitude") -> Tensor:
    """The scores a ranking under ``convention`` sorts: ``|scores|`` or ``scores`` (any shape)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {list(CONVENTIONS)}, got {convention!r}")
    return scores.abs() if convention == "magnitude" else scores


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's τ-b per example (``(B,)``, NaN where undefined), its p-values, and the
    :data:`CONVENTIONS` entry it was computed under."""

    tau: Tensor
    p_value: Tensor
    convention: str = "magnitude"

    @property
    def mean_tau(self) -> float:
        return float(self.tau.nanmean())

    @property
    def sd_tau(self) -> float:
        """Standard deviation of τ over the examples where it is defined (``ddof=1``; NaN for
        fewer than two)."""
        defined = self.tau[~self.tau.isnan()]
        return float(defined.std()) if len(defined) > 1 else float("nan")

    @property
    def n(self) -> int:
        """Examples with a defined τ."""
        return int((~self.tau.isnan()).sum())


def rank_agreement(
    first: Tensor, second: Tensor, mask: Tensor, convention: str = "magnitude"
) -> RankAgreement:
    """Kendall's τ-b (``scipy.stats.kendalltau``) between two ``(B, N)`` importance scores over
    each example's tokens (``mask (B, N)``), ranked under ``convention`` (:data:`CONVENTIONS`)."""
    from scipy.stats import kendalltau

    if first.shape != second.shape or first.shape != mask.shape:
        raise ValueError(
            f"first, second and mask must share one (B, N) shape, got {tuple(first.shape)}, "
            f"{tuple(second.shape)} and {tuple(mask.shape)}"
        )
    first, second = ranked(first, convention), ranked(second, convention)
    taus, p_values = [], []
    for a, b, keep in zip(first.detach().cpu(), second.detach().cpu(), mask.cpu(), strict=True):
        result = kendalltau(a[keep].double().numpy(), b[keep].double().numpy())
        taus.append(result.statistic)
        p_values.append(result.pvalue)
    return RankAgreement(
        torch.tensor(taus, dtype=torch.float64),
        torch.tensor(p_values, dtype=torch.float64),
        convention,
    )


def percentile_bootstrap(
    columns: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap interval over examples (Efron & Tibshirani 1993, ch. 13).

    Args:
        columns: per-example values, each ``(n,)``; resampled together (the same examples).
        statistic: ``statistic(*resampled)`` with each argument ``(resamples, n)`` returns the
            ``(resamples,)`` statistic (e.g. ``lambda x: np.nanmean(x, axis=1)``).
        resamples: bootstrap draws.
        level: coverage of the interval.
        seed: seeds ``numpy.random.default_rng``: the same inputs give the same interval.

    Returns:
        ``(low, high)``; NaN when no resample gives a finite statistic.
    """
    arrays = [np.asarray(c, dtype=np.float64) for c in columns]
    n = len(arrays[0])
    if n == 0 or any(len(a) != n for a in arrays):
        raise ValueError(
            f"columns must be non-empty and of one length, got {[len(a) for a in arrays]}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of only-NaN τ is dropped
        values = np.asarray(statistic(*(a[draws] for a in arrays)), dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class EraserScores:
    """Comprehensiveness and sufficiency per bin (``(len(bins),)``, averaged over examples),
    their AOPC, and the same per example (``(B, len(bins))``)."""

    bins: tuple[float, ...]
    comprehensiveness: Tensor
    sufficiency: Tensor
    example_comprehensiveness: Tensor | None = None  # (B, bins)
    example_sufficiency: Tensor | None = None  # (B, bins)

    @property
    def example_aopc(self) -> tuple[Tensor, Tensor]:
        """Per-example AOPC ``((B,), (B,))``: comprehensiveness, sufficiency."""
        if self.example_comprehensiveness is None or self.example_sufficiency is None:
            raise ValueError("these scores were built without per-example values")
        return self.example_comprehensiveness.mean(-1), self.example_sufficiency.mean(-1)

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
            comprehensive.append(full - prob(mask & ~top))  # (B,)
            sufficient.append(full - prob(top))
    per_comprehensive = torch.stack(comprehensive, dim=-1)  # (B, bins)
    per_sufficient = torch.stack(sufficient, dim=-1)
    return EraserScores(
        tuple(bins),
        per_comprehensive.mean(0),
        per_sufficient.mean(0),
        per_comprehensive,
        per_sufficient,
    )


def permute_weights(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Shuffle each query's weights among the keys it attends to (weight > 0); others stay 0.

    Args:
        weights: ``(..., K)`` attention weights.

    Returns:
        The same shape: every row a permutation of its allowed entries.
    """
    allowed = weights > 0
    noise = torch.rand(weights.shape, generator=generator, device=weights.device)
    shuffled = noise.masked_fill(~allowed, 2.0).argsort(dim=-1)  # allowed keys first, random order
    positions = torch.arange(weights.shape[-1], device=weights.device).expand_as(weights)
    in_order = positions.masked_fill(~allowed, weights.shape[-1]).argsort(dim=-1)  # allowed first
    return torch.zeros_like(weights).scatter(-1, in_order, weights.gather(-1, shuffled))


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """``½ Σ |p - q|`` over the last dimension."""
    return 0.5 * (p - q).abs().sum(-1)


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen–Shannon divergence (nats, at most ln 2) over the last dimension."""
    middle = 0.5 * (p + q)

    def kl(a: Tensor) -> Tensor:
        return torch.where(
            a > 0, a * (a.clamp_min(1e-30) / middle.clamp_min(1e-30)).log(), 0.0
        ).sum(-1)

    return 0.5 * kl(p) + 0.5 * kl(q)


@dataclass(frozen=True)
class PermutationResult:
    """Output change (total variation of the class distribution), ``(B, permutations)``."""

    tvd: Tensor

    @property
    def median(self) -> Tensor:
        """Median output change per example, ``(B,)``."""
        return self.tvd.median(dim=-1).values


def permutation_test(
    model: nn.Module,
    run: Callable[[], Tensor],
    layers: Sequence[str] | None = None,
    permutations: int = 100,
    seed: int = 0,
) -> PermutationResult:
    """How much the output moves when attention weights are randomly permuted (Jain & Wallace).

    Args:
        model: the model whose attention layers are permuted.
        run: runs ``model`` on fixed inputs and returns logits ``(B, C)``.
        layers: layers to permute (default all).
        permutations: random permutations per example.
        seed: for the permutations.

    A small change means the output does not depend on *which* tokens get the weight: the
    weights then say little about why the model decided as it did.
    """
    from attnkit.recording import intervene

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        base = run().softmax(-1)
        changes = []
        for _ in range(permutations):
            with intervene(model, lambda _, w: permute_weights(w, generator), layers):
                changes.append(total_variation(run().softmax(-1), base))
    return PermutationResult(torch.stack(changes, dim=-1))


@dataclass(frozen=True)
class AdversarialResult:
    """Most different weights found that keep the output within ``epsilon`` (``(B,)`` each).

    ``jsd``: Jensen–Shannon divergence from the original weights, averaged over heads and
    queries; ``tvd``: the output change at that point.
    """

    jsd: Tensor
    tvd: Tensor
    epsilon: float


def adversarial_attention(
    model: nn.Module,
    run: Callable[[], Tensor],
    layer: str,
    epsilon: float = 0.01,
    steps: int = 100,
    lr: float = 0.5,
    seed: int = 0,
) -> AdversarialResult:
    """Search weights for ``layer`` far from the model's own that leave the output unchanged.

    Gradient ascent on ``JSD(A', A) - λ · max(0, TVD(y', y) - ε)`` over the logits of ``A'``
    (Jain & Wallace 2019, section 4.2). A large JSD at ``TVD <= ε`` means very different
    attention explains the same decision equally well. ``run`` must keep autograd enabled.
    """
    from attnkit.recording import capture, intervene

    with torch.no_grad(), capture(model, weights=True, layers=[layer]) as rec:
        base = run().softmax(-1)
    original = rec.weights[layer]  # (B, H, Q, K)
    allowed = original > 0
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(original.shape, generator=generator)
    logits = (original.clamp_min(1e-12).log() + noise).requires_grad_()
    optimizer = torch.optim.Adam([logits], lr=lr)
    best_jsd = torch.zeros(original.shape[0])
    best_tvd = torch.zeros(original.shape[0])
    for _ in range(steps):
        candidate = logits.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
        with intervene(model, lambda _, w, chosen=candidate: chosen, [layer]):
            tvd = total_variation(run().softmax(-1), base)  # (B,)
        jsd = js_divergence(candidate, original).mean(dim=(1, 2))  # (B,)
        better = (tvd <= epsilon) & (jsd > best_jsd)
        best_jsd = torch.where(better, jsd.detach(), best_jsd)
        best_tvd = torch.where(better, tvd.detach(), best_tvd)
        loss = (-jsd + 100.0 * (tvd - epsilon).clamp_min(0)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return AdversarialResult(best_jsd, best_tvd, epsilon)


def __getattr__(name: str):
    return moved_name(__name__, name)
