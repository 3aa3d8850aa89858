"""Plain-language verdicts: which explanations can be read as importance on this model and data.

An explanation method earns trust when removing the tokens it ranks highest hurts the prediction
nearly as much as removing the tokens a behavioural reference ranks highest (leave-one-out or
integrated gradients: what the output actually responds to), measured against a random ranking:

    gain = (comprehensiveness - random) / (reference comprehensiveness - random)

with ERASER comprehensiveness (DeYoung et al. 2020), and when it ranks tokens in the same
direction as the reference (Kendall's τ > 0; Jain & Wallace 2019). Kendall's τ over *all* tokens
is reported but not thresholded: the many tokens a model ignores rank in arbitrary order under any
method, which pulls τ towards zero even for faithful explanations.

No verdict is given when the reference itself barely beats a random ranking (its comprehensiveness
exceeds random by less than :data:`MIN_SPAN`, in units of the predicted class's probability): the
output does not respond to removing tokens on these inputs (an untrained head, a saturated
prediction), the gain is noise over noise, and such a method is *inconclusive*, not trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.interpret.attribution import Classifier
from attnkit.interpret.faithfulness import BINS, eraser, rank_agreement

__all__ = ["MIN_GAIN", "MIN_SPAN", "MethodVerdict", "judge"]

MIN_GAIN = 0.5  # share of the reference's comprehensiveness gain over random needed for trust
MIN_SPAN = 0.05  # the reference must beat random by this much probability for any verdict


@dataclass(frozen=True)
class MethodVerdict:
    """One explanation method's verdict and the numbers behind it."""

    method: str
    reference: str
    tau: float  # mean Kendall's tau with the reference over examples
    p_value: float  # median p-value of those taus
    comprehensiveness: float  # AOPC: higher means its top tokens matter
    random_comprehensiveness: float  # AOPC of a random ranking
    reference_comprehensiveness: float  # AOPC of the reference ranking
    sufficiency: float  # AOPC: lower means its top tokens suffice
    trusted: bool  # False when inconclusive

    @property
    def conclusive(self) -> bool:
        """Whether the reference beats a random ranking by :data:`MIN_SPAN` (a verdict at all)."""
        return self.reference_comprehensiveness - self.random_comprehensiveness >= MIN_SPAN

    @property
    def verdict(self) -> str:
        """``"trusted"``, ``"flagged"`` or ``"inconclusive"``."""
        if not self.conclusive:
            return "inconclusive"
        return "trusted" if self.trusted else "flagged"

    @property
    def gain(self) -> float:
        """Comprehensiveness gain over random, as a share of the reference's gain."""
        span = self.reference_comprehensiveness - self.random_comprehensiveness
        if span <= 0:
            return 0.0
        return (self.comprehensiveness - self.random_comprehensiveness) / span

    @property
    def sentence(self) -> str:
        """The verdict in one sentence."""
        numbers = (
            f"removing its top tokens does {self.gain:.0%} of what removing {self.reference}'s "
            f"does (comprehensiveness {self.comprehensiveness:.2f}, random "
            f"{self.random_comprehensiveness:.2f}, {self.reference} "
            f"{self.reference_comprehensiveness:.2f}; τ = {self.tau:.2f})"
        )
        if not self.conclusive:
            return (
                f"{self.method}: no verdict: removing {self.reference}'s top tokens barely changes "
                f"the prediction (comprehensiveness {self.reference_comprehensiveness:.3f}, random "
                f"{self.random_comprehensiveness:.3f}), so the output does not respond to removed "
                "tokens on these inputs and no explanation can be checked against it"
            )
        if self.trusted:
            return f"{self.method} points at what the model uses: {numbers}"
        return (
            f"{self.method} does not point at what the model uses: {numbers}; "
            "do not read it as importance"
        )


def judge(
    forward: Classifier,
    embeddings: Tensor,
    mask: Tensor,
    target: Tensor,
    explanations: Mapping[str, Tensor],
    reference: tuple[str, Tensor],
    seed: int = 0,
) -> list[MethodVerdict]:
    """Verdicts for each explanation against a behavioural reference.

    Args:
        forward, embeddings, mask, target: the classifier and its inputs
            (see :mod:`attnkit.interpret.attribution`).
        explanations: ``{method name: (B, N) token importance}``.
        reference: ``(name, (B, N) importance)``, e.g. ``("leave-one-out", leave_one_out(...))``.
        seed: for the random baseline ranking.
    """
    reference_name, reference_scores = reference
    generator = torch.Generator().manual_seed(seed)
    random_scores = torch.rand(mask.shape, generator=generator)
    baseline = eraser(forward, embeddings, mask, target, random_scores, BINS)
    best = eraser(forward, embeddings, mask, target, reference_scores, BINS)
    result = []
    for method, scores in explanations.items():
        agreement = rank_agreement(scores, reference_scores, mask)
        erased = eraser(forward, embeddings, mask, target, scores, BINS)
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
        )
        trusted = verdict.conclusive and verdict.gain >= MIN_GAIN and verdict.tau > 0
        result.append(MethodVerdict(**{**verdict.__dict__, "trusted": trusted}))
    return result
