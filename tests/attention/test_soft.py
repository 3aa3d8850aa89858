"""SoftAttention: shapes, masks, every score and normalizer, and clear errors."""

import pytest
import torch

from attnkit import SoftAttention
from attnkit.attention.functional import NORMALIZERS
from attnkit.attention.scores import SCORES


@pytest.mark.parametrize("score", sorted(SCORES))
@pytest.mark.parametrize("normalizer", sorted(NORMALIZERS))
def test_weights_are_a_distribution_and_output_their_average(score, normalizer):
    torch.manual_seed(0)
    att = SoftAttention(8, 8, score=score, normalizer=normalizer)
    query, keys, values = torch.randn(3, 4, 8), torch.randn(3, 6, 8), torch.randn(3, 6, 5)
    out = att(query, keys, values)
    assert out.output.shape == (3, 4, 5)
    assert out.weights.shape == (3, 4, 6)
    assert (out.weights >= 0).all()
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(3, 4))
    torch.testing.assert_close(out.output, out.weights @ values)


def test_single_query_matches_many_and_values_default_to_keys():
    torch.manual_seed(0)
    att = SoftAttention(16, 32, score="additive")
    query, keys = torch.randn(2, 16), torch.randn(2, 7, 32)
    single = att(query, keys)
    many = att(query.unsqueeze(1), keys, keys)
    assert single.output.shape == (2, 32) and single.weights.shape == (2, 7)
    torch.testing.assert_close(single.output, many.output.squeeze(1))
    torch.testing.assert_close(single.weights, many.weights.squeeze(1))


def test_key_padding_and_full_masks():
    torch.manual_seed(0)
    att = SoftAttention(4, 4, score="dot")
    query, keys = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    padding = torch.tensor([[True, True, True, False, False], [True] * 5])
    out = att(query, keys, mask=padding)
    assert out.weights[0, :, 3:].eq(0).all()
    # the first example equals attending over its three real keys only
    alone = att(query[:1], keys[:1, :3])
    torch.testing.assert_close(out.output[:1], alone.output)

    full = torch.rand(2, 3, 5) > 0.5
    full[0, 0] = False  # a query with nowhere to look
    out = att(query, keys, mask=full)
    assert out.weights[~full].eq(0).all()
    assert out.output[0, 0].eq(0).all() and not out.output.isnan().any()


def test_temperature_sharpens():
    torch.manual_seed(0)
    query, keys = torch.randn(1, 1, 4), torch.randn(1, 6, 4)
    hot = SoftAttention(4, 4, score="dot", temperature=10.0)(query, keys).weights
    cold = SoftAttention(4, 4, score="dot", temperature=0.1)(query, keys).weights
    assert cold.max() > hot.max()


def test_gradients_reach_the_score_parameters():
    att = SoftAttention(3, 5, score="additive", hidden_dim=7)
    out = att(torch.randn(2, 3), torch.randn(2, 4, 5), torch.randn(2, 4, 2))
    out.output.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in att.parameters())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"score": "cosine"}, ValueError, "score must be one of"),
        ({"normalizer": "hardmax"}, ValueError, "normalizer must be one of"),
        ({"score": "dot", "key_dim": 5}, ValueError, "needs query_dim == key_dim"),
        ({"temperature": -1.0}, ValueError, "temperature must be > 0"),
        ({"score": "general", "hidden_dim": 3}, ValueError, "hidden_dim is for the 'additive'"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    args = {"query_dim": 4, "key_dim": 4, **kwargs}
    with pytest.raises(error, match=match):
        SoftAttention(**args)


def test_forward_errors_name_the_argument():
    att = SoftAttention(4, 6)
    with pytest.raises(ValueError, match=r"query must be \(B, 4\)"):
        att(torch.randn(2, 3, 5), torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"keys must be \(B, K, 6\)"):
        att(torch.randn(2, 4), torch.randn(3, 3, 6))
    with pytest.raises(ValueError, match="values must be"):
        att(torch.randn(2, 4), torch.randn(2, 3, 6), torch.randn(2, 4, 6))
    with pytest.raises(TypeError, match="mask must have dtype torch.bool"):
        att(torch.randn(2, 4), torch.randn(2, 3, 6), mask=torch.ones(2, 3))


def test_non_tensor_inputs_are_a_type_error():
    att = SoftAttention(4, 4)
    with pytest.raises(TypeError, match="keys must be a torch.Tensor"):
        att(torch.randn(2, 4), [[1.0]])
