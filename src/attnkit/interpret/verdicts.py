"""Plain-language verdicts: which explanations can be read as importance on this model and data.

An explanation method earns trust when it ranks tokens like a behavioural reference (leave-one-out
or integrated gradients: what the model's output actually responds to) and when removing the
tokens it ranks highest hurts the prediction more than removing random ones (ERASER
comprehensiveness). Thresholds are explicit and recorded with every verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.interpret.attribution import Classifier
from attnkit.interpret.faithfulness import BINS, eraser, rank_agreement

__all__ = ["MIN_TAU", "MethodVerdict", "judge"]

MIN_TAU = 0.3  # Kendall's tau with the reference needed to read a method as importance
MAX_P = 0.05  # and the median p-value of that tau


@dataclass(frozen=True)
class MethodVerdict:
    """One explanation method's verdict and the numbers behind it."""

    method: str
    reference: str
    tau: float  # mean Kendall's tau with the reference over examples
    p_value: float  # median p-value of those taus
    comprehensiveness: float  # AOPC: higher means its top tokens matter
    random_comprehensiveness: float  # AOPC of a random ranking, the baseline to beat
    sufficiency: float  # AOPC: lower means its top tokens suffice
    trusted: bool

    @property
    def sentence(self) -> str:
        """The verdict in one sentence."""
        if self.trusted:
            return (
                f"{self.method} ranks inputs like {self.reference} (τ = {self.tau:.2f}) and its "
                f"top tokens matter (comprehensiveness {self.comprehensiveness:.2f} vs "
                f"{self.random_comprehensiveness:.2f} for random): it can be read as importance"
            )
        return (
            f"{self.method} does not rank inputs like {self.reference} (τ = {self.tau:.2f}, "
            f"comprehensiveness {self.comprehensiveness:.2f} vs "
            f"{self.random_comprehensiveness:.2f} for random): do not read it as importance"
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
    result = []
    for method, scores in explanations.items():
        agreement = rank_agreement(scores, reference_scores, mask)
        erased = eraser(forward, embeddings, mask, target, scores, BINS)
        tau = agreement.mean_tau
        p_value = float(agreement.p_value.nanmedian())
        trusted = (
            tau >= MIN_TAU
            and p_value <= MAX_P
            and erased.comprehensiveness_aopc > baseline.comprehensiveness_aopc
        )
        result.append(
            MethodVerdict(
                method=method,
                reference=reference_name,
                tau=tau,
                p_value=p_value,
                comprehensiveness=erased.comprehensiveness_aopc,
                random_comprehensiveness=baseline.comprehensiveness_aopc,
                sufficiency=erased.sufficiency_aopc,
                trusted=trusted,
            )
        )
    return result
