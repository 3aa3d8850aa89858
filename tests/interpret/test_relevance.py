"""Relevance and head importance against their definitions, computed by hand on a tiny model."""

import pytest
import torch
import torch.nn.functional as F
from tiny_model import E, H, N, Tiny, manual_forward

import attnkit
from attnkit.interpret import head_importance, relevance


@pytest.fixture
def setup():
    torch.manual_seed(0)
    return Tiny(), torch.randn(3, N, E), torch.tensor([0, 2, 1])


def test_capture_records_gradients_of_the_weights(setup):
    model, x, y = setup
    logits, weights = manual_forward(model, x)
    loss = F.cross_entropy(logits, y, reduction="sum")
    expected = torch.autograd.grad(loss, weights)
    with attnkit.capture(model, grad=True) as rec:
        F.cross_entropy(model(x), y, reduction="sum").backward()
    for layer, want_w, want_g in zip(["first", "second"], weights, expected, strict=True):
        torch.testing.assert_close(rec.weights[layer], want_w.detach())
        torch.testing.assert_close(rec.grads[layer], want_g)


def test_relevance_follows_the_generic_rule(setup):
    model, x, y = setup
    logits, weights = manual_forward(model, x)
    grads = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), weights)
    expected = torch.eye(N).repeat(3, 1, 1)
    for a, g in zip(weights, grads, strict=True):
        expected = expected + (a * g).clamp(min=0).mean(1) @ expected
    with attnkit.capture(model, grad=True) as rec:
        model(x).gather(1, y[:, None]).sum().backward()
    torch.testing.assert_close(relevance(rec.weights, rec.grads), expected.detach())


def test_head_importance_equals_the_head_mask_gradient(setup):
    model, x, y = setup
    mask = torch.ones(2, H, requires_grad=True)
    per_example = []
    for i in range(3):
        logits, _ = manual_forward(model, x[i : i + 1], head_mask=mask)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y[i : i + 1]), mask)
        per_example.append(grad.abs())
    expected = torch.stack(per_example).mean(0)  # E_x |∂L/∂ξ|, (L, H)

    def loss_fn(m, batch):
        inputs, labels = batch
        return F.cross_entropy(m(inputs), labels, reduction="sum")

    marker = torch.full_like(model.classify.weight, 7.0)
    model.classify.weight.grad = marker.clone()
    raw = head_importance(model, [(x[:2], y[:2]), (x[2:], y[2:])], loss_fn, normalize=False)
    torch.testing.assert_close(raw.scores, expected)
    assert raw.layers == ["first", "second"]
    torch.testing.assert_close(model.classify.weight.grad, marker)  # left as it was
    assert model.first.in_proj_weight.grad is None
    normalized = head_importance(model, [(x, y)], loss_fn)
    torch.testing.assert_close(normalized.scores.norm(dim=1), torch.ones(2))
    least = normalized.ranking()[0]
    assert (
        normalized.scores[["first", "second"].index(least[0]), least[1]] == normalized.scores.min()
    )


def test_errors(setup):
    model, x, _ = setup
    with attnkit.capture(model, weights=True) as rec:
        model(x)
    with pytest.raises(ValueError, match="grad=True"):
        rec.grads  # noqa: B018
    with attnkit.capture(model, grad=True) as rec:
        model(x)
    with pytest.raises(RuntimeError, match="call backward"):
        rec.grads  # noqa: B018
    with pytest.raises(ValueError, match="equal length"):
        relevance([torch.eye(2)[None, None]], [])
    with pytest.raises(ValueError, match="at least one batch"):
        head_importance(model, [], lambda m, b: m(b).sum())
