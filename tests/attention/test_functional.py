"""Score functions, masks and normalizers against hand-computed numbers."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from attnkit.attention import functional as F
from attnkit.attention.scores import make_score


def test_additive_score_matches_hand_computation():
    # W = I, U = 0.5·I, b = 0, v = (1, -1), q = (1, 0).
    # k1 = (1, 2): tanh((1, 0) + (0.5, 1)) · v = tanh(1.5) - tanh(1.0)
    # k2 = (0, -1): tanh((1, 0) + (0, -0.5)) · v = tanh(1.0) + tanh(0.5)
    query = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    keys = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]], dtype=torch.float64)
    w = torch.eye(2, dtype=torch.float64)
    u = 0.5 * torch.eye(2, dtype=torch.float64)
    v = torch.tensor([1.0, -1.0], dtype=torch.float64)
    scores = F.additive_score(query, keys, w, u, v)
    expected = torch.tensor(
        [[[0.9051482536448664 - 0.7615941559557649, 0.7615941559557649 + 0.46211715726000974]]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(scores, expected)


def test_additive_score_bias_shifts_the_hidden_layer():
    query = torch.zeros(1, 1, 1, dtype=torch.float64)
    keys = torch.zeros(1, 2, 1, dtype=torch.float64)
    one = torch.ones(1, 1, dtype=torch.float64)
    scores = F.additive_score(
        query,
        keys,
        one,
        one,
        torch.ones(1, dtype=torch.float64),
        bias=torch.tensor([0.5], dtype=torch.float64),
    )
    torch.testing.assert_close(scores, torch.full((1, 1, 2), math.tanh(0.5), dtype=torch.float64))


def test_general_score_matches_hand_computation():
    # q W = (1, 2) [[1, 0, 2], [0, 1, 0]] = (1, 2, 2); (1, 2, 2)·(3, 1, 1) = 7; ·(0, 1, -1) = 0
    query = torch.tensor([[[1.0, 2.0]]])
    weight = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
    keys = torch.tensor([[[3.0, 1.0, 1.0], [0.0, 1.0, -1.0]]])
    assert F.general_score(query, keys, weight).tolist() == [[[7.0, 0.0]]]


def test_dot_and_scaled_dot_scores():
    query = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    keys = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 2.0]]])
    assert F.dot_score(query, keys).tolist() == [[[10.0, 8.0]]]
    assert F.scaled_dot_score(query, keys).tolist() == [[[5.0, 4.0]]]  # / sqrt(4)
    assert F.scaled_dot_score(query, keys, scale=0.1).allclose(torch.tensor([[[1.0, 0.8]]]))


def test_softmax_with_temperature():
    scores = torch.tensor([0.0, math.log(2.0)], dtype=torch.float64)
    torch.testing.assert_close(F.softmax(scores), torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
    root2 = math.sqrt(2.0)  # temperature 2 halves log 2: weights ∝ (1, √2)
    expected = torch.tensor([1 / (1 + root2), root2 / (1 + root2)], dtype=torch.float64)
    torch.testing.assert_close(F.softmax(scores, temperature=2.0), expected)


def test_sparsemax_matches_hand_computation():
    # z = (1, 0.5, -1): support {1, 2}, threshold τ = (1 + 0.5 - 1) / 2 = 0.25
    scores = torch.tensor([1.0, 0.5, -1.0], dtype=torch.float64)
    torch.testing.assert_close(
        F.sparsemax(scores), torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64)
    )


def test_entmax15_matches_hand_computation():
    # p_i = (z_i / 2 - τ)₊²; support {1, 2}: (0.5 - τ)² + (0.25 - τ)² = 1
    # → 2τ² - 1.5τ - 0.6875 = 0 → τ = (1.5 - √7.75) / 4
    tau = (1.5 - math.sqrt(7.75)) / 4
    expected = torch.tensor([(0.5 - tau) ** 2, (0.25 - tau) ** 2, 0.0], dtype=torch.float64)
    scores = torch.tensor([1.0, 0.5, -1.0], dtype=torch.float64)
    torch.testing.assert_close(F.entmax15(scores), expected)


@pytest.mark.parametrize("method", sorted(F.NORMALIZERS))
def test_masked_normalizers_equal_normalizing_the_allowed_keys_alone(method):
    torch.manual_seed(0)
    scores = torch.randn(4, 7, dtype=torch.float64) * 3
    mask = torch.tensor([True, False, True, True, False, True, False])
    weights = F.normalize(scores, mask, method)
    assert (weights[:, ~mask] == 0).all()
    torch.testing.assert_close(weights[:, mask], F.normalize(scores[:, mask], None, method))


@pytest.mark.parametrize("method", sorted(F.NORMALIZERS))
def test_fully_masked_row_gives_zeros_and_finite_gradients(method):
    scores = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False, False, True], [False] * 5])
    weights = F.normalize(scores, mask, method)
    assert weights[1].eq(0).all()
    torch.testing.assert_close(weights[0].sum(), torch.tensor(1.0, dtype=torch.float64))
    (weights * torch.arange(5.0, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[1].eq(0).all()


def test_unknown_normalizer_and_bad_temperature():
    with pytest.raises(ValueError, match="normalizer must be one of"):
        F.normalize(torch.zeros(3), method="softermax")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        F.softmax(torch.zeros(3), temperature=0.0)


def test_causal_and_window_masks():
    assert F.causal_mask(3, 3).tolist() == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]
    # bottom-right: 2 queries are positions 2 and 3 of 4 keys
    assert F.causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert F.window_mask(4, 4, 2).tolist() == [
        [True, True, False, False],
        [True, True, True, False],
        [False, True, True, True],
        [False, False, True, True],
    ]
    with pytest.raises(ValueError, match="window"):
        F.window_mask(2, 2, 0)


def test_prepare_mask_shapes_and_errors():
    assert F.prepare_mask(torch.ones(2, 5, dtype=torch.bool), (2, 3, 4, 5)).shape == (2, 1, 1, 5)
    assert F.prepare_mask(torch.ones(2, 4, 5, dtype=torch.bool), (2, 3, 4, 5)).shape == (2, 1, 4, 5)
    assert F.prepare_mask(torch.ones(2, 5, dtype=torch.bool), (2, 4, 5)).shape == (2, 1, 5)
    assert F.prepare_mask(None, (2, 4, 5)) is None
    with pytest.raises(TypeError, match="mask must have dtype torch.bool"):
        F.prepare_mask(torch.ones(2, 5), (2, 4, 5))
    with pytest.raises(TypeError, match="boolean torch.Tensor"):
        F.prepare_mask([[True]], (1, 1, 1))
    with pytest.raises(ValueError, match=r"got shape \(2, 6\)"):
        F.prepare_mask(torch.ones(2, 6, dtype=torch.bool), (2, 4, 5))
    with pytest.raises(ValueError, match=r"key_padding must be"):
        F.prepare_mask(torch.ones(3, 4, 5, dtype=torch.bool), (2, 4, 5), name="key_padding")


@pytest.mark.parametrize("name", ["dot", "scaled_dot", "general", "additive"])
def test_gradcheck_scores(name):
    torch.manual_seed(0)
    score = make_score(name, 4, 4, hidden_dim=3 if name == "additive" else None).double()
    query = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda q, k: score(q, k), (query, keys))
    names = [name for name, _ in score.named_parameters()]
    if names:
        params = tuple(p.detach().requires_grad_() for p in score.parameters())

        def with_params(*values):
            state = dict(zip(names, values, strict=True))
            return torch.func.functional_call(score, state, (query, keys))

        assert gradcheck(with_params, params)


@pytest.mark.parametrize("method", sorted(F.NORMALIZERS))
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_normalizers(method, masked):
    torch.manual_seed(1)
    scores = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 6) > 0.3 if masked else None
    assert gradcheck(lambda s: F.normalize(s, mask, method, temperature=0.7), (scores,))
