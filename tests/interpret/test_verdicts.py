"""Verdicts separate a faithful explanation from an unfaithful one on a model with known answers."""

import numpy as np
import pytest
import torch
from scipy.stats import bootstrap, kendalltau

from attnkit.interpret.attribution import leave_one_out
from attnkit.interpret.faithfulness import percentile_bootstrap
from attnkit.interpret.verdicts import MIN_GAIN, MIN_SPAN, judge

W = torch.tensor([[1.0, -1.0], [0.5, 0.0], [0.0, 2.0]], dtype=torch.float64)


def bag(embeddings, mask):
    return (embeddings * mask[..., None]).sum(1) @ W


def _inputs(n=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(n, 10, 3, generator=gen, dtype=torch.float64)  # no fp32 ties
    mask = torch.ones(n, 10, dtype=torch.bool)
    target = torch.zeros(n, dtype=torch.long)
    # each token's true contribution to the log-odds of class 0
    contribution = embeddings @ (W[:, 0] - W[:, 1])
    return embeddings, mask, target, contribution


def _judge(embeddings, mask, target, explanations, **kwargs):
    reference = ("leave-one-out", leave_one_out(bag, embeddings, mask, target))
    return judge(bag, embeddings, mask, target, explanations, reference, **kwargs)


def test_judge_signed():
    embeddings, mask, target, contribution = _inputs()
    explanations = {"contribution": contribution, "reversed": -contribution}
    good, bad = _judge(embeddings, mask, target, explanations, convention="signed")
    assert good.tau > 0.99 and good.trusted and good.p_value < 1e-3
    # it ranks like the reference, so it removes what the reference removes: gain 100%
    assert good.comprehensiveness == pytest.approx(good.reference_comprehensiveness)
    assert good.gain == pytest.approx(1.0)
    assert bad.tau < -0.99 and not bad.trusted and bad.gain < 0
    assert good.comprehensiveness > good.random_comprehensiveness > bad.comprehensiveness
    assert "points at what the model uses" in good.sentence and "τ(signed) 1.00" in good.sentence
    assert "n=16" in good.sentence and "do not read it as importance" in bad.sentence
    assert MIN_GAIN == 0.5
    assert good.verdict == "trusted" and bad.verdict == "flagged"
    assert good.label == "trust" and bad.label == "do not"
    # the intervals hold the point estimates; a perfect ranking has a zero-width τ interval
    assert good.tau_interval == pytest.approx((1.0, 1.0))
    assert good.gain_interval[0] <= good.gain <= good.gain_interval[1]
    assert bad.gain_interval[1] < MIN_GAIN and bad.tau_interval[1] < 0
    assert good.n == bad.n == 16 and good.signed and good.convention == "signed"


def test_judge_magnitude_is_the_default_and_matches_scipy():
    """Over magnitudes, a sign-flipped explanation has the original's τ: τ cannot tell them
    apart; ERASER, which removes the tokens each explanation says support the prediction, can."""
    embeddings, mask, target, contribution = _inputs()
    explanations = {"contribution": contribution, "reversed": -contribution}
    good, flipped = _judge(embeddings, mask, target, explanations)
    assert good.convention == "magnitude" and good.tau_name == "τ(|scores|)"
    reference = leave_one_out(bag, embeddings, mask, target)
    expected = [
        kendalltau(c.abs().numpy(), r.abs().numpy()).statistic
        for c, r in zip(contribution, reference, strict=True)
    ]
    assert good.tau == pytest.approx(float(np.mean(expected)))
    assert good.tau_sd == pytest.approx(float(np.std(expected, ddof=1)))
    assert [e.tau for e in good.examples] == pytest.approx(expected)
    assert flipped.tau == pytest.approx(good.tau) and flipped.gain < 0 < MIN_GAIN < good.gain
    assert good.verdict == "trusted" and flipped.verdict == "flagged"
    assert "τ(|scores|) 0.69" in good.sentence


def test_small_samples_give_no_verdict_with_n_named():
    """Three examples: whatever the point numbers say, no verdict, and the sentence says why."""
    embeddings, mask, target, contribution = _inputs(n=3)
    explanations = {"contribution": contribution, "reversed": -contribution}
    for convention in ("magnitude", "signed"):
        verdicts = _judge(embeddings, mask, target, explanations, convention=convention)
        for verdict in verdicts:
            assert verdict.n == 3 and not verdict.decided and not verdict.trusted
            assert verdict.verdict == "uncertain"
            assert verdict.label == "no verdict (too few examples: n=3)"
            assert verdict.sentence.startswith(
                f"{verdict.method}: no verdict (too few examples: n=3)"
            )
            assert len(verdict.examples) == 3
    # each example's own numbers: the reference ranks like itself, so its gain is 1
    (single,) = _judge(
        embeddings, mask, target, {"contribution": contribution}, convention="signed"
    )
    assert [e.gain for e in single.examples] == pytest.approx([1.0, 1.0, 1.0])
    assert all(e.leaning == "trust" for e in single.examples)


def test_percentile_bootstrap_matches_scipy():
    values = np.random.default_rng(3).normal(1.0, 2.0, size=200)
    low, high = percentile_bootstrap([values], lambda x: x.mean(-1), resamples=4000, seed=1)
    reference = bootstrap(
        (values,), np.mean, n_resamples=4000, method="percentile", random_state=1
    ).confidence_interval
    assert low == pytest.approx(reference.low, abs=0.05)
    assert high == pytest.approx(reference.high, abs=0.05)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))  # the normal approximation
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert percentile_bootstrap([values], lambda x: x.mean(-1), seed=1) == percentile_bootstrap(
        [values], lambda x: x.mean(-1), seed=1
    )  # seeded: the same interval every time


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
