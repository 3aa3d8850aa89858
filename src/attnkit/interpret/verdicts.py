"""Plain-language verdicts: which explanations can be read as importance on this model and data.

An explanation method earns trust when removing the tokens it ranks highest hurts the prediction
nearly as much as removing the tokens a behavioural reference ranks highest (leave-one-out or
integrated gradients: what the output actually responds to), measured against a random ranking:

    gain = (comprehensiveness - random) / (reference comprehensiveness - random)

with ERASER comprehensiveness (DeYoung et al. 2020, its AOPC over :data:`BINS`), and when it
ranks tokens in the same direction as the reference (Kendall's τ-b > 0; Jain & Wallace 2019).

**Convention.** τ ranks magnitudes ``|score|`` by default (Jain & Wallace's convention;
:data:`~attnkit.interpret.faithfulness.CONVENTIONS`); ``convention="signed"`` ranks signed scores
as they are. Every verdict says which. ERASER removes the tokens each method scores highest *as
given* under both conventions: comprehensiveness asks whether the tokens an explanation says
support the prediction carry it, and a token a signed method says pushes *against* the prediction
is not one of them (ranking ``|score|`` there mixes pushes both ways, which cancel: on a linear
bag-of-words model the reference then barely beats a random ranking). For unsigned methods
(attention, rollout) the two conventions coincide.

**Uncertainty.** The gain and τ are means over examples; a percentile bootstrap over the examples
(:func:`~attnkit.interpret.faithfulness.percentile_bootstrap`, seeded) gives a 95% interval for
each. A verdict is given only when the intervals clear the thresholds: *trusted* when the gain's
interval lies above :data:`MIN_GAIN` and τ's above 0, *flagged* when the gain's lies below
:data:`MIN_GAIN` or τ's below 0. Otherwise, and always with fewer than :data:`MIN_EXAMPLES`
examples (a bootstrap over a handful of examples understates its own spread), there is **no
verdict** ("no verdict (too few examples: n=3)"). Each verdict carries its ``n`` and intervals.

No verdict is given either when the reference itself barely beats a random ranking (its
comprehensiveness exceeds random by less than :data:`MIN_SPAN`, in units of the predicted class's
probability): the output does not respond to removing tokens on these inputs (an untrained head,
a saturated prediction), the gain is noise over noise, and the method is *inconclusive*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from attnkit._moved import moved_name
from attnkit.htmlkit import format_interval as _interval
from attnkit.htmlkit import format_number as _number
from attnkit.htmlkit import format_percent as _percent
from attnkit.interpret.attribution import Classifier, is_signed
from attnkit.interpret.faithfulness import (
    BINS,
    eraser,
    percentile_bootstrap,
    rank_agreement,
)

__all__ = [
    "LEVEL",
    "MIN_EXAMPLES",
    "MIN_GAIN",
    "MIN_SPAN",
    "RESAMPLES",
    "ExampleScore",
    "MethodVerdict",
    "judge",
]

MIN_GAIN = 0.5  # share of the reference's comprehensiveness gain over random needed for trust
MIN_SPAN = 0.05  # the reference must beat random by this much probability for any verdict
MIN_EXAMPLES = 10  # fewer examples: no verdict, whatever the intervals say
LEVEL = 0.95  # coverage of the bootstrap intervals
RESAMPLES = 2000  # bootstrap draws


@dataclass(frozen=True)
class ExampleScore:
    """One example's own numbers (``n = 1``: no interval, so never a verdict)."""

    gain: float  # NaN when the reference does not beat random on this example
    tau: float  # NaN when undefined (e.g. all scores tied)
    comprehensiveness: float
    random_comprehensiveness: float
    reference_comprehensiveness: float

    @property
    def leaning(self) -> str:
        """What the point numbers alone would say: ``"trust"``, ``"do not"`` or ``"unclear"``
        (a hint about this example, not a verdict)."""
        if math.isnan(self.gain) or math.isnan(self.tau):
            return "unclear"
        return "trust" if self.gain >= MIN_GAIN and self.tau > 0 else "do not"


@dataclass(frozen=True)
class MethodVerdict:
    """One explanation method's verdict and the numbers behind it (means over ``n`` examples,
    with bootstrap intervals at :data:`LEVEL`)."""

    method: str
    reference: str
    tau: float  # mean Kendall's tau-b with the reference over examples
    p_value: float  # median p-value of those taus
    comprehensiveness: float  # AOPC: higher means its top tokens matter
    random_comprehensiveness: float  # AOPC of a random ranking
    reference_comprehensiveness: float  # AOPC of the reference ranking
    sufficiency: float  # AOPC: lower means its top tokens suffice
    trusted: bool  # False when flagged, inconclusive or without a verdict
    n: int = 0  # examples the means are over
    tau_interval: tuple[float, float] = (math.nan, math.nan)
    gain_interval: tuple[float, float] = (math.nan, math.nan)
    decided: bool = True  # False: the intervals do not clear the thresholds (or n is too small)
    convention: str = "magnitude"  # how scores were ranked: "magnitude" or "signed"
    signed: bool = False  # whether the method's own scores carry a sign
    tau_sd: float = math.nan  # standard deviation of τ over the examples
    examples: tuple[ExampleScore, ...] = ()  # each example's own numbers, in input order

    @property
    def conclusive(self) -> bool:
        """Whether the reference beats a random ranking by :data:`MIN_SPAN` (a verdict at all)."""
        return self.reference_comprehensiveness - self.random_comprehensiveness >= MIN_SPAN

    @property
    def verdict(self) -> str:
        """``"trusted"``, ``"flagged"``, ``"inconclusive"`` (the output ignores removals) or
        ``"uncertain"`` (the intervals do not clear the thresholds: too few examples)."""
        if 0 < self.n < MIN_EXAMPLES:  # first: too few examples to say anything
            return "uncertain"
        if not self.conclusive:
            return "inconclusive"
        if not self.decided:
            return "uncertain"
        return "trusted" if self.trusted else "flagged"

    @property
    def label(self) -> str:
        """The verdict as a short label: ``"trust"``, ``"do not"``, ``"no verdict (too few
        examples: n=3)"`` (below :data:`MIN_EXAMPLES`), ``"no verdict (intervals straddle the
        thresholds: n=40)"`` or ``"no verdict (output ignores removals)"``."""
        return {
            "trusted": "trust",
            "flagged": "do not",
            "uncertain": f"no verdict (too few examples: n={self.n})"
            if self.n < MIN_EXAMPLES
            else f"no verdict (intervals straddle the thresholds: n={self.n})",
            "inconclusive": "no verdict (output ignores removals)",
        }[self.verdict]

    @property
    def gain(self) -> float:
        """Comprehensiveness gain over random, as a share of the reference's gain."""
        span = self.reference_comprehensiveness - self.random_comprehensiveness
        if span <= 0:
            return 0.0
        return (self.comprehensiveness - self.random_comprehensiveness) / span

    @property
    def tau_name(self) -> str:
        """``"τ(|scores|)"`` or ``"τ(signed)"``: which ranking the τ compares."""
        return "τ(|scores|)" if self.convention == "magnitude" else "τ(signed)"

    @property
    def numbers(self) -> str:
        """The gain and τ with their intervals and ``n``, in one phrase."""
        return (
            f"gain {_percent(self.gain)} {_interval(self.gain_interval, percent=True)}, "
            f"{self.tau_name} {_number(self.tau)} {_interval(self.tau_interval)}, "
            f"n={self.n}, {LEVEL:.0%} bootstrap intervals"
        )

    @property
    def sentence(self) -> str:
        """The verdict in one sentence, with ``n`` and the intervals."""
        if self.verdict == "inconclusive":
            return (
                f"{self.method}: no verdict: removing {self.reference}'s top tokens barely changes "
                "the prediction (comprehensiveness "
                f"{_number(self.reference_comprehensiveness, 3)}, random "
                f"{_number(self.random_comprehensiveness, 3)}, n={self.n}), so the output "
                "does not respond to removed tokens on these inputs and no explanation can be "
                "checked against it"
            )
        if self.verdict == "uncertain":
            why = (
                f"at least {MIN_EXAMPLES} examples are needed for an interval"
                if self.n < MIN_EXAMPLES
                else f"the intervals do not clear gain ≥ {MIN_GAIN:.0%} and τ > 0"
            )
            return f"{self.method}: {self.label}: {why} (against {self.reference}: {self.numbers})"
        details = (
            f"removing its top tokens does {_percent(self.gain)} of what removing "
            f"{self.reference}'s does ({self.numbers}; comprehensiveness "
            f"{_number(self.comprehensiveness, 2)}, random "
            f"{_number(self.random_comprehensiveness, 2)}, "
            f"{self.reference} {_number(self.reference_comprehensiveness, 2)})"
        )
        if self.trusted:
            return f"{self.method} points at what the model uses: {details}"
        return (
            f"{self.method} does not point at what the model uses: {details}; "
            "do not read it as importance"
        )


def _gain(method: np.ndarray, random: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Gain of the mean AOPCs over the last axis (``(R, n)`` -> ``(R,)``)."""
    m, r, f = method.mean(-1), random.mean(-1), reference.mean(-1)
    span = f - r
    return np.where(span > 0, (m - r) / np.where(span > 0, span, 1.0), np.nan)


def judge(
    forward: Classifier,
    embeddings: Tensor,
    mask: Tensor,
    target: Tensor,
    explanations: Mapping[str, Tensor],
    reference: tuple[str, Tensor],
    seed: int = 0,
    convention: str = "magnitude",
    resamples: int = RESAMPLES,
) -> list[MethodVerdict]:
    """Verdicts for each explanation against a behavioural reference, with intervals.

    Args:
        forward, embeddings, mask, target: the classifier and its inputs
            (see :mod:`attnkit.interpret.attribution`): ``embeddings (B, N, E)``,
            ``mask (B, N)``, ``target (B,)``.
        explanations: ``{method name: (B, N) token importance}``.
        reference: ``(name, (B, N) importance)``, e.g. ``("leave-one-out", leave_one_out(...))``.
        seed: for the random baseline ranking and the bootstrap.
        convention: ``"magnitude"`` (rank ``|scores|``; default) or ``"signed"``.
        resamples: bootstrap draws for the intervals.

    Returns:
        One :class:`MethodVerdict` per explanation, in order; ``n = B``.
    """
    reference_name, reference_scores = reference
    generator = torch.Generator().manual_seed(seed)
    random_scores = torch.rand(mask.shape, generator=generator)
    baseline = eraser(forward, embeddings, mask, target, random_scores, BINS)
    best = eraser(forward, embeddings, mask, target, reference_scores, BINS)
    random_each = baseline.example_aopc[0].double().cpu().numpy()
    reference_each = best.example_aopc[0].double().cpu().numpy()
    n = int(mask.shape[0])
    result = []
    for method, scores in explanations.items():
        agreement = rank_agreement(scores, reference_scores, mask, convention)
        erased = eraser(forward, embeddings, mask, target, scores, BINS)
        method_each = erased.example_aopc[0].double().cpu().numpy()
        taus = agreement.tau.numpy()
        gain_interval = percentile_bootstrap(
            [method_each, random_each, reference_each], _gain, resamples, LEVEL, seed
        )
        tau_interval = percentile_bootstrap(
            [taus], lambda t: np.nanmean(t, axis=-1), resamples, LEVEL, seed
        )
        spans = reference_each - random_each
        examples = tuple(
            ExampleScore(
                gain=float((m - r) / s) if s > 0 else math.nan,
                tau=float(t),
                comprehensiveness=float(m),
                random_comprehensiveness=float(r),
                reference_comprehensiveness=float(f),
            )
            for m, r, f, s, t in zip(
                method_each, random_each, reference_each, spans, taus, strict=True
            )
        )
        verdict = MethodVerdict(
            method=method,
            reference=reference_name,
            tau=agreement.mean_tau,
            p_value=float(agreement.p_value.nanmedian()),
            comprehensiveness=erased.comprehensiveness_aopc,
            random_comprehensiveness=baseline.comprehensiveness_aopc,
            reference_comprehensiveness=best.comprehensiveness_aopc,
            sufficiency=erased.sufficiency_aopc,
            trusted=False,
            n=n,
            tau_interval=tau_interval,
            gain_interval=gain_interval,
            convention=convention,
            signed=is_signed(method, scores),
            tau_sd=agreement.sd_tau,
            examples=examples,
        )
        result.append(_decide(verdict))
    return result


def _decide(verdict: MethodVerdict) -> MethodVerdict:
    """Set ``trusted`` and ``decided`` from the intervals (see the module docstring)."""
    gain_low, gain_high = verdict.gain_interval
    tau_low, tau_high = verdict.tau_interval
    intervals = not any(math.isnan(x) for x in (gain_low, gain_high, tau_low, tau_high))
    trusted = intervals and gain_low >= MIN_GAIN and tau_low > 0
    flagged = intervals and (gain_high < MIN_GAIN or tau_high < 0)
    enough = verdict.n >= MIN_EXAMPLES
    decided = enough and (trusted or flagged)
    return replace(verdict, trusted=decided and trusted and verdict.conclusive, decided=decided)


def __getattr__(name: str):
    return moved_name(__name__, name)
