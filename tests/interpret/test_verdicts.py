"""Verdicts separate a faithful explanation from an unfaithful one on a model with known answers."""

import pytest
import torch

from attnkit.interpret.attribution import leave_one_out
from attnkit.interpret.verdicts import MIN_GAIN, MIN_SPAN, judge

W = torch.tensor([[1.0, -1.0], [0.5, 0.0], [0.0, 2.0]], dtype=torch.float64)


def bag(embeddings, mask):
    return (embeddings * mask[..., None]).sum(1) @ W


def test_judge():
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(16, 10, 3, generator=gen, dtype=torch.float64)  # no fp32 ties
    mask = torch.ones(16, 10, dtype=torch.bool)
    target = torch.zeros(16, dtype=torch.long)
    # each token's true contribution to the log-odds of class 0
    contribution = embeddings @ (W[:, 0] - W[:, 1])
    verdicts = judge(
        bag,
        embeddings,
        mask,
        target,
        {"contribution": contribution, "reversed": -contribution},
        ("leave-one-out", leave_one_out(bag, embeddings, mask, target)),
    )
    good, bad = verdicts
    assert good.tau > 0.99 and good.trusted and good.p_value < 1e-3
    # it ranks like the reference, so it removes what the reference removes: gain 100%
    assert good.comprehensiveness == pytest.approx(good.reference_comprehensiveness)
    assert good.gain == pytest.approx(1.0)
    assert bad.tau < -0.99 and not bad.trusted and bad.gain < 0
    assert good.comprehensiveness > good.random_comprehensiveness > bad.comprehensiveness
    assert "points at what the model uses" in good.sentence and "τ = 1.00" in good.sentence
    assert "do not read it as importance" in bad.sentence
    assert MIN_GAIN == 0.5
    assert good.verdict == "trusted" and bad.verdict == "flagged"


def test_no_verdict_when_the_output_ignores_removals():
    """A model whose output barely moves (a nearly flat head) leaves every method inconclusive,
    however well it ranks: the gain would be noise over noise."""
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(16, 10, 3, generator=gen, dtype=torch.float64)
    mask = torch.ones(16, 10, dtype=torch.bool)
    target = torch.zeros(16, dtype=torch.long)

    def flat(embeddings, mask):
        return 1e-3 * bag(embeddings, mask)

    contribution = embeddings @ (W[:, 0] - W[:, 1])
    (verdict,) = judge(
        flat,
        embeddings,
        mask,
        target,
        {"contribution": contribution},
        ("leave-one-out", leave_one_out(flat, embeddings, mask, target)),
    )
    span = verdict.reference_comprehensiveness - verdict.random_comprehensiveness
    assert 0 < span < MIN_SPAN  # it still ranks like the reference, but nothing moves
    assert verdict.gain == pytest.approx(1.0)
    assert not verdict.conclusive and not verdict.trusted and verdict.verdict == "inconclusive"
    assert verdict.sentence.startswith("contribution: no verdict: removing leave-one-out's")
