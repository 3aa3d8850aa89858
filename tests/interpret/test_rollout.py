"""Rollout against a hand-computed product; head statistics against known heads."""

import math

import pytest
import torch

import attnkit
from attnkit import MultiHeadAttention
from attnkit.interpret import fuse_heads, head_stats, rollout


def _shift(n):
    """Each token attends to the one before it (token 0 to the last)."""
    return torch.roll(torch.eye(n), shifts=-1, dims=1)


def test_rollout_equals_the_hand_computed_product():
    # Â1 = (J/4 + I)/2, Â2 = (P + I)/2, Â3 = (I + I)/2 = I, so
    # R = Â3 Â2 Â1 = I/4 + P/4 + J/8: 0.375 on the diagonal and on the previous token, else 0.125
    n = 4
    layers = [torch.full((1, 1, n, n), 0.25), _shift(n)[None, None], torch.eye(n)[None, None]]
    expected = torch.full((n, n), 0.125) + 0.25 * torch.eye(n) + 0.25 * _shift(n)
    torch.testing.assert_close(rollout(layers)[0], expected)
    assert expected[1].tolist() == [0.375, 0.375, 0.125, 0.125]


def test_rollout_without_residual_is_the_plain_product_and_start_layer_skips():
    torch.manual_seed(0)
    layers = [torch.rand(2, 3, 5, 5).softmax(-1) for _ in range(3)]
    fused = [w.mean(1) for w in layers]
    torch.testing.assert_close(rollout(layers, residual=False), fused[2] @ fused[1] @ fused[0])
    torch.testing.assert_close(rollout(layers, residual=False, start_layer=2), fused[2])
    torch.testing.assert_close(rollout(layers).sum(-1), torch.ones(2, 5))


def test_head_fusion_and_discard_ratio():
    weights = torch.stack([torch.eye(3), torch.full((3, 3), 1 / 3)])[None]  # (1, 2, 3, 3)
    assert fuse_heads(weights, "max")[0].diagonal().tolist() == [1.0, 1.0, 1.0]
    torch.testing.assert_close(
        fuse_heads(weights, "min")[0], torch.full((3, 3), 0.0).fill_diagonal_(1 / 3)
    )
    graded = torch.tensor([[[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.25, 0.35, 0.4]]]])
    # discard the 2 smallest of the 6 off-diagonal weights (0.1 and 0.1), then renormalize
    kept = rollout([graded], residual=False, discard_ratio=2 / 6)[0]
    expected = torch.tensor([[0.7, 0.2, 0.0], [0.0, 0.6, 0.3], [0.25, 0.35, 0.4]])
    torch.testing.assert_close(kept, expected / expected.sum(-1, keepdim=True))


def test_rollout_of_captured_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(MultiHeadAttention(16, 2), MultiHeadAttention(16, 2))
    x = torch.randn(1, 6, 16)
    with attnkit.capture(model, weights=True) as rec:
        model[1](model[0](x).output)
    result = rollout(rec.weights)
    assert result.shape == (1, 6, 6)
    torch.testing.assert_close(result, rollout(list(rec.weights.values())))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head_fusion": "median"}, "head_fusion must be one of"),
        ({"discard_ratio": 1.0}, "discard_ratio must be in"),
        ({"start_layer": 5}, "start_layer must be in"),
    ],
)
def test_rollout_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rollout([torch.eye(3)[None, None]], **kwargs)
    with pytest.raises(ValueError, match="one shape"):
        rollout([torch.eye(3)[None, None], torch.eye(4)[None, None]])
    with pytest.raises(ValueError, match="at least one layer"):
        rollout([])


def test_head_stats_find_previous_token_and_first_token_heads():
    n = 6
    previous = torch.roll(torch.eye(n), -1, 1)
    previous[0] = torch.eye(n)[0]  # the first token has nobody before it
    first = torch.zeros(n, n)
    first[:, 0] = 1.0
    uniform = torch.full((n, n), 1 / n)
    weights = {"layer": torch.stack([previous, first, uniform])[None]}  # (1, 3, N, N)
    stats = head_stats(weights)
    # the first-token head also "looks back" from query 1 (to token 0): 1 of 5 queries
    assert stats.previous[0].tolist() == [1.0, pytest.approx(1 / 5), pytest.approx(1 / n)]
    # sink: the previous-token head puts queries 0 and 1 on token 0
    assert stats.sink[0].tolist() == [pytest.approx(2 / n), 1.0, pytest.approx(1 / n)]
    torch.testing.assert_close(stats.entropy[0, 2], torch.tensor(math.log(n)))
    assert stats.entropy[0, :2].abs().max() < 1e-6
    # mean |i - j|: previous-token head 5/6 (token 0 looks at itself); first-token head (0+..+5)/6
    torch.testing.assert_close(stats.distance[0, :2], torch.tensor([5 / 6, 15 / 6]))
    assert stats.heads_where("previous") == [("layer", 0)]
    assert stats.heads_where("sink") == [("layer", 1)]
    with pytest.raises(ValueError, match="score must be"):
        stats.heads_where("entropy")


def test_head_stats_query_mask():
    weights = [torch.eye(3)[None, None].clone()]
    weights[0][0, 0, 2] = torch.tensor([1.0, 0.0, 0.0])  # a padded query looking at token 0
    masked = head_stats(weights, query_mask=torch.tensor([[True, True, False]]))
    assert masked.sink[0, 0].item() == pytest.approx(0.5)  # queries 0 and 1 only
    with pytest.raises(ValueError, match="query_mask must be"):
        head_stats(weights, query_mask=torch.ones(1, 4, dtype=torch.bool))


def test_encoder_decoder_rollout_equals_a_hand_computed_mixture():
    from attnkit.interpret.attention_rollout import rollout_encoder_decoder

    # one encoder layer over S = 2 source tokens, one decoder layer over T = 2 tokens, one head
    encoder = torch.tensor([[[[0.5, 0.5], [0.0, 1.0]]]])  # Â = norm(A + I) = [[.75,.25],[0,1]]
    decoder = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])  # Â = [[1, 0], [.25, .75]]
    cross = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # C R_enc = [[.75, .25], [0, 1]]
    mixture = rollout_encoder_decoder([encoder], [decoder], [cross])
    # R = ½ [Â_dec | 0] + ½ [0 | C R_enc]
    expected = torch.tensor([[[0.5, 0.0, 0.375, 0.125], [0.125, 0.375, 0.0, 0.5]]])
    torch.testing.assert_close(mixture, expected)
    torch.testing.assert_close(mixture.sum(-1), torch.ones(1, 2))
    plain = rollout_encoder_decoder([encoder], [decoder], [cross], residual=False)
    # without residuals the decoder token is all source: [0 | C A_enc]
    torch.testing.assert_close(plain, torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 1.0]]]))
    with pytest.raises(ValueError, match="one tensor per decoder layer"):
        rollout_encoder_decoder([encoder], [decoder], [])
    with pytest.raises(ValueError, match="rollout_encoder_decoder"):
        rollout([encoder, cross[0][..., :1]])
