"""Attributions and faithfulness scores on a linear bag-of-embeddings model with known answers."""

import math

import pytest
import torch
from scipy.stats import kendalltau

from attnkit.interpret.attribution import gradient_x_input, integrated_gradients, leave_one_out
from attnkit.interpret.faithfulness import eraser, rank_agreement

W = torch.tensor([[1.0, -1.0], [0.5, 0.0], [0.0, 2.0]])  # (E, C)


def bag(embeddings, mask):
    """logits = Σ_visible x_n W: every token's contribution is x_n · W."""
    return (embeddings * mask[..., None]).sum(1) @ W


EMB = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [2.0, 2.0, 0.0], [0.0, 0.0, 0.0]]])
MASK = torch.tensor([[True, True, True, False]])
TARGET = torch.tensor([0])


def test_gradient_x_input_and_integrated_gradients_are_exact_for_a_linear_model():
    expected = torch.tensor([[1.0, 0.0, 3.0, 0.0]])  # x_n · W[:, 0]; the padded token gets 0
    torch.testing.assert_close(gradient_x_input(bag, EMB, MASK, TARGET), expected)
    torch.testing.assert_close(integrated_gradients(bag, EMB, MASK, TARGET, steps=8), expected)


def test_leave_one_out_by_hand():
    logits = torch.tensor([4.0, -1.0 + 2.0 - 2.0])  # [1+0+3, -1+2-2]
    full = logits.softmax(-1)[0]
    without = [
        torch.tensor([3.0, 0.0]),  # drop token 0: [0+3, 2-2]
        torch.tensor([4.0, -3.0]),  # drop token 1: [1+3, -1-2]
        torch.tensor([1.0, 1.0]),  # drop token 2: [1+0, -1+2]
    ]
    expected = [full - z.softmax(-1)[0] for z in without] + [0.0]
    torch.testing.assert_close(leave_one_out(bag, EMB, MASK, TARGET)[0], torch.tensor(expected))


def test_rank_agreement():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9], [1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    same = rank_agreement(scores, scores * 2, mask)
    assert same.tau.tolist() == [1.0, 1.0] and same.mean_tau == 1.0
    assert same.convention == "magnitude" and same.n == 2
    # over magnitudes (the default) a sign flip changes nothing; signed, it reverses the order
    assert rank_agreement(scores, -scores, mask).tau.tolist() == [1.0, 1.0]
    reverse = rank_agreement(scores, -scores, mask, convention="signed")
    assert reverse.tau.tolist() == [-1.0, -1.0] and reverse.convention == "signed"
    # 4 tokens, perfect agreement: exact two-sided p = 2/4! = 1/12
    assert reverse.p_value[0].item() == pytest.approx(1 / 12)
    with pytest.raises(ValueError, match="share one"):
        rank_agreement(scores, scores[:1], mask)
    with pytest.raises(ValueError, match="convention must be one of"):
        rank_agreement(scores, scores, mask, convention="abs")


def test_rank_agreement_over_magnitudes_is_scipys_tau_of_absolute_values():
    gen = torch.Generator().manual_seed(4)
    first, second = torch.randn(5, 9, generator=gen), torch.randn(5, 9, generator=gen)
    mask = torch.ones(5, 9, dtype=torch.bool)
    mask[2, 6:] = False
    result = rank_agreement(first, second, mask)
    for i in range(5):
        keep = mask[i]
        expected = kendalltau(first[i][keep].abs().numpy(), second[i][keep].abs().numpy())
        assert result.tau[i].item() == pytest.approx(expected.statistic)
        assert result.p_value[i].item() == pytest.approx(expected.pvalue)
    assert result.sd_tau == pytest.approx(float(result.tau.std()))


def test_eraser_by_hand():
    importance = torch.tensor([[1.0, 0.0, 5.0, 0.0]])  # token 2, then 0, then 1
    result = eraser(bag, EMB, MASK, TARGET, importance, bins=(0.2, 0.5))
    p = lambda z: math.exp(z[0]) / (math.exp(z[0]) + math.exp(z[1]))  # noqa: E731
    full = p([4.0, -1.0])
    # 20% of 3 tokens -> 1 token (token 2); 50% -> 2 tokens (tokens 2 and 0)
    comprehensive = [full - p([1.0, 1.0]), full - p([0.0, 2.0])]
    sufficient = [full - p([3.0, -2.0]), full - p([4.0, -3.0])]  # keep token 2; tokens 2, 0
    torch.testing.assert_close(result.comprehensiveness, torch.tensor(comprehensive))
    torch.testing.assert_close(result.sufficiency, torch.tensor(sufficient))
    assert result.comprehensiveness_aopc == pytest.approx(sum(comprehensive) / 2)
    reverse = eraser(bag, EMB, MASK, TARGET, -importance, bins=(0.2, 0.5))
    assert reverse.comprehensiveness_aopc < result.comprehensiveness_aopc


def test_input_errors():
    with pytest.raises(ValueError, match=r"mask must be boolean \(B, N\)"):
        gradient_x_input(bag, EMB, MASK.float(), TARGET)
    with pytest.raises(ValueError, match="embeddings must be"):
        leave_one_out(bag, EMB[0], MASK, TARGET)
    with pytest.raises(ValueError, match="target must be"):
        gradient_x_input(bag, EMB, MASK, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="bins must be"):
        eraser(bag, EMB, MASK, TARGET, torch.zeros(1, 4), bins=(0.0,))
