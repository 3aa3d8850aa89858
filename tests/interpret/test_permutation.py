"""Interventions on attention: permutation test and adversarial weights."""

import math

import pytest
import torch
from torch import nn

import attnkit
from attnkit import MultiHeadAttention
from attnkit.interpret.faithfulness import (
    adversarial_attention,
    js_divergence,
    permutation_test,
    permute_weights,
    total_variation,
)
from attnkit.recording import intervene


class Pooled(nn.Module):
    """One attention layer; the class is read from token 0's output."""

    def __init__(self, embed_dim=8):
        super().__init__()
        self.attn = MultiHeadAttention(embed_dim, 2)
        self.classify = nn.Linear(embed_dim, 2)

    def forward(self, x):
        return self.classify(self.attn(x).output[:, 0])


def test_permute_weights_keeps_values_and_zeros():
    gen = torch.Generator().manual_seed(0)
    weights = torch.tensor([[0.1, 0.0, 0.2, 0.7, 0.0], [0.5, 0.5, 0.0, 0.0, 0.0]])
    shuffled = permute_weights(weights, gen)
    assert shuffled[weights == 0].eq(0).all()
    torch.testing.assert_close(shuffled.sort(-1).values, weights.sort(-1).values)
    many = torch.stack([permute_weights(weights, gen) for _ in range(50)])
    assert (many[:, 0, 3] != 0.7).any()  # the large weight does move


def test_divergences():
    p, q = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert total_variation(p, q).item() == 1.0
    assert js_divergence(p, q).item() == pytest.approx(math.log(2))
    assert js_divergence(p, p).item() == 0.0


def test_intervene_edits_and_restores():
    torch.manual_seed(0)
    model = Pooled().eval()
    x = torch.randn(2, 5, 8)
    before = model(x)
    uniform = lambda _, w: torch.full_like(w, 1 / w.shape[-1])  # noqa: E731
    with intervene(model, uniform), attnkit.capture(model, weights=True) as rec:
        edited = model(x)
    assert rec.weights["attn"].eq(0.2).all()
    assert not torch.allclose(edited, before)
    torch.testing.assert_close(model(x), before)
    with (
        pytest.raises(ValueError, match="edit must return weights of shape"),
        intervene(model, lambda _, w: w[..., :2]),
    ):
        model(x)


def test_permutation_test_separates_attention_that_matters_from_attention_that_does_not():
    torch.manual_seed(0)
    model = Pooled().eval()
    x = torch.randn(3, 6, 8)
    matters = permutation_test(model, lambda: model(x), permutations=20)
    assert matters.tvd.shape == (3, 20) and matters.median.min() > 1e-3
    same = x[:, :1].expand(3, 6, 8)  # every token alike: any weights give the same output
    ignored = permutation_test(model, lambda: model(same), permutations=20)
    assert ignored.tvd.abs().max() < 1e-6


def test_adversarial_attention_finds_different_weights_only_when_they_do_not_matter():
    torch.manual_seed(0)
    model = Pooled().eval()
    same = torch.randn(2, 1, 8).expand(2, 6, 8)
    free = adversarial_attention(model, lambda: model(same), "attn", steps=60)
    assert (free.tvd <= 0.01).all() and free.jsd.min() > 0.3  # near ln 2: anything goes
    x = torch.randn(2, 6, 8) * 3
    with torch.no_grad():
        model.classify.weight.mul_(20)  # make the decision sensitive to what is read
    tight = adversarial_attention(model, lambda: model(x), "attn", steps=60)
    assert (tight.tvd <= 0.01).all()
    assert tight.jsd.max() < free.jsd.min()
