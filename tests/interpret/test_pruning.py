"""Head pruning: a pruned head contributes exactly what the paper's head mask ξ_h = 0 leaves."""

import pytest
import torch
import torch.nn.functional as F
from tiny_model import H, Tiny, manual_forward

from attnkit.interpret import HeadImportance, prune_heads, pruned


@pytest.fixture
def setup():
    torch.manual_seed(0)
    return Tiny().eval(), torch.randn(4, 5, 16), torch.tensor([0, 2, 1, 1])


def test_pruned_heads_equal_the_head_mask(setup):
    model, x, _ = setup
    head_mask = torch.ones(2, H)
    head_mask[0, 1] = head_mask[1, 0] = head_mask[1, 3] = 0
    expected, _ = manual_forward(model, x, head_mask=head_mask)
    with torch.no_grad(), pruned(model, [("first", 1), ("second", 0), ("second", 3)]):
        got = model(x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(model(x), manual_forward(model, x)[0])  # restored


def test_curve_follows_the_importance_order(setup):
    model, x, y = setup
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.3, 0.8, 0.2, 0.6]])
    importance = HeadImportance(layers=["first", "second"], scores=scores)

    def evaluate(m):
        with torch.no_grad():
            return -F.cross_entropy(m(x), y).item()

    curve = prune_heads(model, importance, evaluate, counts=[0, 2, 8])
    assert curve.order[:3] == [("first", 1), ("second", 2), ("second", 0)]
    assert curve.counts == [0, 2, 8]
    assert curve.metric[0] == pytest.approx(evaluate(model))
    head_mask = torch.ones(2, H)
    head_mask[0, 1] = head_mask[1, 2] = 0
    two, _ = manual_forward(model, x, head_mask=head_mask)
    assert curve.metric[1] == pytest.approx(-F.cross_entropy(two, y).item())
    none_left, _ = manual_forward(model, x, head_mask=torch.zeros(2, H))
    assert curve.metric[2] == pytest.approx(-F.cross_entropy(none_left, y).item())
    assert curve.removable(tolerance=float("inf")) == 8
    assert curve.removable(tolerance=0.0) >= 0


def test_errors(setup):
    model, _, _ = setup
    importance = HeadImportance(layers=["first", "second"], scores=torch.rand(2, H))
    with pytest.raises(ValueError, match=r"counts must be .* in \[0, 8\]"):
        prune_heads(model, importance, lambda m: 0.0, counts=[9])
    with (
        pytest.raises(ValueError, match="head 7 of layer 'first' does not exist"),
        pruned(model, [("first", 7)]),
    ):
        model(torch.randn(1, 5, 16))
