"""HardAttention: exact one-hot forward, the three gradient estimators against their oracles
(enumeration for REINFORCE, the relaxation's vector-Jacobian product for straight-through), masks,
errors, the training helpers, and a learning test."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.attention.hard import ESTIMATORS, HardAttention, sample_gumbel
from attnkit.attention.hard_training import (
    MovingAverageBaseline,
    anneal_temperature,
    reinforce_loss,
)

ALL = sorted(ESTIMATORS)


def _inputs(batch=3, queries=2, keys=6, dq=4, dk=5, dv=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, queries, dq, generator=g),
        torch.randn(batch, keys, dk, generator=g),
        torch.randn(batch, keys, dv, generator=g),
    )


def _module(estimator, k=1, temperature=1.0, score="additive", dq=4, dk=5, seed=0):
    torch.manual_seed(seed)
    return HardAttention(dq, dk, score=score, estimator=estimator, k=k, temperature=temperature)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("estimator", ALL)
@pytest.mark.parametrize("training", [True, False])
def test_forward_is_exactly_one_hot_and_reads_the_selected_value(estimator, training):
    query, keys, values = _inputs()
    att = _module(estimator).train(training)
    out = att(query, keys, values, generator=torch.Generator().manual_seed(1))
    assert out.weights.shape == (3, 2, 6)
    assert torch.equal((out.weights == 1).sum(-1), torch.ones(3, 2, dtype=torch.long))
    assert torch.equal((out.weights == 0).sum(-1), torch.full((3, 2), 5))
    index = out.weights.argmax(-1)  # (B, Q)
    expected = torch.stack([values[b, index[b]] for b in range(3)])  # (B, Q, Dv)
    assert torch.equal(out.output, expected)
    assert out.log_prob.shape == out.entropy.shape == (3, 2)


@pytest.mark.parametrize("estimator", ALL)
def test_k_greater_than_one_reads_the_mean_of_k_distinct_values(estimator):
    query, keys, values = _inputs(keys=7)
    att = _module(estimator, k=3).train()
    out = att(query, keys, values, generator=torch.Generator().manual_seed(2))
    assert torch.equal((out.weights == 1 / 3).sum(-1), torch.full((3, 2), 3))
    assert torch.equal((out.weights == 0).sum(-1), torch.full((3, 2), 4))
    chosen = out.weights > 0  # (B, Q, K)
    expected = torch.stack(
        [torch.stack([values[b][chosen[b, q]].mean(0) for q in range(2)]) for b in range(3)]
    )
    torch.testing.assert_close(out.output, expected)


def test_single_query_drops_the_query_dimension():
    query, keys, values = _inputs(queries=1)
    att = _module("reinforce").eval()
    single = att(query[:, 0], keys, values)
    full = att(query, keys, values)
    assert single.output.shape == (3, 3) and single.weights.shape == (3, 6)
    assert single.log_prob.shape == single.entropy.shape == (3,)
    assert torch.equal(single.output, full.output[:, 0])
    assert torch.equal(single.log_prob, full.log_prob[:, 0])


@pytest.mark.parametrize("estimator", ALL)
def test_eval_mode_selects_the_top_scores_deterministically(estimator):
    query, keys, values = _inputs(keys=9)
    att = _module(estimator, k=2).eval()
    first, second = att(query, keys, values), att(query, keys, values)
    assert torch.equal(first.weights, second.weights)
    top = att.score(query, keys).topk(2, dim=-1).indices  # (B, Q, 2)
    assert torch.equal(first.weights.gather(-1, top), torch.full((3, 2, 2), 0.5))


def test_training_mode_sampling_follows_the_estimators_distribution():
    # reinforce draws from softmax(scores / T); gumbel and topk(sample=True) from softmax(scores).
    n, temperature = 20000, 2.0
    query = torch.randn(1, 1, 4).expand(n, 1, 4)
    keys = torch.randn(1, 5, 5).expand(n, 5, 5)
    for estimator, sample, scale in [
        ("reinforce", None, 1 / temperature),
        ("gumbel", None, 1.0),
        ("topk", True, 1.0),
    ]:
        # topk never samples by itself: ask for it, in eval mode.
        att = _module(estimator, temperature=temperature).train(sample is None)
        with torch.no_grad():
            out = att(query, keys, sample=sample, generator=torch.Generator().manual_seed(3))
            expected = torch.softmax(att.score(query[:1], keys[:1])[0, 0] * scale, -1)
        frequency = out.weights[:, 0].mean(0)
        stderr = (expected * (1 - expected) / n).sqrt()
        assert ((frequency - expected).abs() < 4 * stderr + 1e-3).all(), estimator


def test_topk_does_not_sample_in_training_mode():
    query, keys, values = _inputs()
    att = _module("topk").train()
    a, b = att(query, keys, values), att(query, keys, values)
    assert torch.equal(a.weights, b.weights)
    assert torch.equal(a.weights.argmax(-1), att.score(query, keys).argmax(-1))


def test_log_prob_and_entropy_match_softmax_by_hand():
    query, keys, values = _inputs()
    att = _module("reinforce", temperature=0.5).eval()
    out = att(query, keys, values)
    log_p = torch.log_softmax(att.score(query, keys) / 0.5, -1)  # (B, Q, K)
    index = out.weights.argmax(-1, keepdim=True)
    torch.testing.assert_close(out.log_prob, log_p.gather(-1, index).squeeze(-1))
    torch.testing.assert_close(out.entropy, -(log_p.exp() * log_p).sum(-1))


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("estimator", ALL)
def test_gradients_reach_every_scorer_parameter(estimator):
    query, keys, values = _inputs()
    att = _module(estimator).train()
    out = att(query, keys, values, generator=torch.Generator().manual_seed(4))
    if estimator == "reinforce":
        loss = reinforce_loss(out.log_prob, out.output.sum((1, 2)))
    else:
        loss = (out.output**2).sum()
    loss.backward()
    for name, parameter in att.score.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_reinforce_weights_carry_no_gradient_but_values_do():
    query, keys, values = _inputs()
    values.requires_grad_(True)
    att = _module("reinforce").train()
    out = att(query, keys, values)
    assert not out.weights.requires_grad
    out.output.sum().backward()
    assert torch.equal(values.grad.sum(-1), out.weights.sum(1) * 3)  # Dv = 3 per read


def _exact_expected_reward(att, query, keys, reward, k):
    """E[reward(set)] by enumerating every ordered draw without replacement."""
    p = torch.softmax(att.score(query, keys)[0, 0] / att.temperature, -1)  # (K,)
    total = p.new_zeros(())
    if k == 1:
        return (p * reward).sum()
    for a in range(len(p)):
        for b in range(len(p)):
            if a != b:
                total = total + p[a] * p[b] / (1 - p[a]) * reward[a, b]
    return total


@pytest.mark.parametrize("k", [1, 2])
def test_reinforce_gradient_is_unbiased_against_enumeration(k):
    torch.manual_seed(5)
    num_keys = 4
    att = HardAttention(3, 3, score="general", estimator="reinforce", k=k, temperature=0.8)
    query, keys = torch.randn(1, 1, 3), torch.randn(1, num_keys, 3) * 1.5
    if k == 1:
        reward_table = torch.tensor([1.0, -2.0, 0.5, 3.0])
    else:
        reward_table = torch.randn(num_keys, num_keys)
        reward_table = reward_table + reward_table.T  # a reward of the unordered pair
    exact = torch.autograd.grad(
        _exact_expected_reward(att, query, keys, reward_table, k), att.score.weight
    )[0]
    assert exact.abs().max() > 0.1  # the oracle is not trivially zero
    estimates = []
    generator = torch.Generator().manual_seed(6)
    n = 4000
    for _ in range(20):
        out = att(query.expand(n, 1, 3), keys.expand(n, num_keys, 3), generator=generator)
        chosen = out.weights[:, 0].nonzero()[:, 1].reshape(n, k)  # (n, k) sorted keys
        reward = reward_table[chosen[:, 0]] if k == 1 else reward_table[chosen[:, 0], chosen[:, 1]]
        loss = reinforce_loss(out.log_prob[:, 0], reward)
        estimates.append(-torch.autograd.grad(loss, att.score.weight)[0])
    estimates = torch.stack(estimates)  # (20, Dq, Dk)
    stderr = estimates.std(0) / math.sqrt(len(estimates))
    error = (estimates.mean(0) - exact).abs()
    assert (error < 4 * stderr + 1e-3).all(), (error, stderr)
    assert (stderr < 0.2 * exact.abs().max()).all()  # the estimate is precise enough to judge


def test_gumbel_straight_through_gradient_is_the_relaxations_at_the_same_noise():
    # Forward: the one-hot y = onehot(argmax(s + g)). Backward: for a loss L(y @ V), the gradient
    # w.r.t. the scorer is J_soft^T (dL/dy at the hard y), where soft = softmax((s + g) / tau)
    # with the SAME noise g: the gradient of the Gumbel-softmax relaxation (Jang et al. 2017).
    query, keys, values = _inputs()
    tau = 0.7
    att = _module("gumbel", temperature=tau).train()
    out = att(query, keys, values, generator=torch.Generator().manual_seed(7))
    loss = (out.output.sin() * torch.arange(1.0, 4.0)).sum()  # nonlinear in the output
    straight_through = torch.autograd.grad(loss, list(att.score.parameters()))

    noise = sample_gumbel((3, 2, 6), torch.Generator().manual_seed(7))
    scores = att.score(query, keys)
    assert torch.equal(out.weights.argmax(-1), (scores + noise).argmax(-1))
    soft = torch.softmax((scores + noise) / tau, -1)  # (B, Q, K)
    hard_output = out.output.detach().requires_grad_(True)
    upstream = torch.autograd.grad((hard_output.sin() * torch.arange(1.0, 4.0)).sum(), hard_output)[
        0
    ]
    relaxed = torch.autograd.grad(soft @ values, list(att.score.parameters()), upstream)
    for a, b in zip(straight_through, relaxed, strict=True):
        torch.testing.assert_close(a, b)
        assert b.abs().sum() > 0


def test_topk_straight_through_gradient_is_the_tempered_softmaxs():
    query, keys, values = _inputs()
    att = _module("topk", temperature=2.0).train()
    out = att(query, keys, values)
    weight = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(8))
    straight_through = torch.autograd.grad((out.output * weight).sum(), att.score.v)[0]
    soft = torch.softmax(att.score(query, keys) / 2.0, -1)
    relaxed = torch.autograd.grad(((soft @ values) * weight).sum(), att.score.v)[0]
    torch.testing.assert_close(straight_through, relaxed)


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("estimator", ALL)
@pytest.mark.parametrize("k", [1, 2])
def test_masked_keys_are_never_selected(estimator, k):
    query, keys, values = _inputs(batch=200, keys=6, seed=9)
    mask = torch.rand(200, 6, generator=torch.Generator().manual_seed(10)) < 0.5
    mask[:, 0] = True  # every row has an allowed key
    att = _module(estimator, k=k).train()
    for sample in (True, False):
        out = att(query, keys, values, mask=mask, sample=sample)
        assert (out.weights[~mask[:, None, :].expand_as(out.weights)] == 0).all()
        allowed = mask.sum(-1, keepdim=True).clamp(max=k).expand(200, 2)
        assert torch.equal((out.weights > 0).sum(-1), allowed)
        torch.testing.assert_close(out.weights.sum(-1), torch.ones(200, 2))


def test_full_mask_per_query_and_a_row_with_no_allowed_key():
    query, keys, values = _inputs(batch=2, queries=2, keys=4)
    mask = torch.tensor(
        [[[True, False, False, False], [False, False, True, True]], [[False] * 4, [True] * 4]]
    )
    for estimator in ALL:
        att = _module(estimator).train()
        out = att(query, keys, values, mask=mask)
        assert out.weights[0, 0, 0] == 1 and out.weights[0, 1, :2].sum() == 0
        assert torch.equal(out.output[1, 0], torch.zeros(3))
        assert torch.equal(out.weights[1, 0], torch.zeros(4))
        assert out.log_prob[1, 0] == 0 and out.entropy[1, 0] == 0
        assert out.log_prob[0, 0] == 0  # the only allowed key is certain
        (out.output.sum() + out.log_prob.sum()).backward()
        assert all(torch.isfinite(p.grad).all() for p in att.parameters())


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    num_keys=st.integers(1, 7),
    k=st.integers(1, 3),
    estimator=st.sampled_from(ALL),
    seed=st.integers(0, 1000),
)
def test_property_weights_are_k_hot_over_allowed_keys(batch, num_keys, k, estimator, seed):
    k = min(k, num_keys)
    query, keys, values = _inputs(batch=batch, queries=1, keys=num_keys, seed=seed)
    mask = torch.rand(batch, num_keys, generator=torch.Generator().manual_seed(seed)) < 0.6
    out = _module(estimator, k=k).train()(query, keys, values, mask=mask)
    selected = mask.sum(-1).clamp(max=k)  # (B,)
    assert torch.equal((out.weights[:, 0] > 0).sum(-1), selected)
    assert not (out.weights[:, 0] * ~mask).any()
    expected = torch.where(selected > 0, 1.0, 0.0)
    torch.testing.assert_close(out.weights[:, 0].sum(-1), expected)
    assert torch.isfinite(out.log_prob).all() and torch.isfinite(out.entropy).all()


# ----------------------------------------------------------------------------- errors


def test_unknown_estimator_lists_the_choices():
    with pytest.raises(ValueError, match=r"estimator must be one of \['gumbel', 'reinforce'"):
        HardAttention(4, 4, estimator="hardmax")


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        HardAttention(4, 4, k=k)


def test_bad_inputs_name_the_argument():
    query, keys, values = _inputs()
    att = _module("reinforce", k=2)
    with pytest.raises(ValueError, match="temperature"):
        HardAttention(4, 5, temperature=0.0)
    with pytest.raises(ValueError, match=r"query must be \(B, 4\)"):
        att(query[..., :3], keys, values)
    with pytest.raises(ValueError, match="keys must be"):
        att(query, keys[:2], values)
    with pytest.raises(ValueError, match="values must be"):
        att(query, keys, values[:, :3])
    with pytest.raises(TypeError, match="query must be a torch.Tensor"):
        att(query.tolist(), keys, values)
    with pytest.raises(TypeError, match="mask must have dtype torch.bool"):
        att(query, keys, values, mask=torch.ones(3, 6))
    with pytest.raises(ValueError, match="mask must be"):
        att(query, keys, values, mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="k = 2 is larger than the number of keys K = 1"):
        att(query, keys[:, :1], values[:, :1])


# ----------------------------------------------------------------------------- helpers


def test_reinforce_loss_gradient_and_shapes():
    log_prob = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    entropy = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    reward = torch.tensor([1.0, 0.0])
    loss = reinforce_loss(log_prob, reward, baseline=0.25, entropy=entropy, entropy_weight=0.1)
    # -mean((r - b) * log_prob) - 0.1 * mean(entropy), by hand:
    expected = -(0.75 * (-3.0) + (-0.25) * (-0.6)) / 4 - 0.1 * 2.5
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([[-0.75, -0.75], [0.25, 0.25]]) / 4)
    torch.testing.assert_close(entropy.grad, torch.full((2, 2), -0.1 / 4))
    with pytest.raises(ValueError, match="reward must be"):
        reinforce_loss(log_prob, torch.ones(3))
    with pytest.raises(ValueError, match="entropy must be given"):
        reinforce_loss(log_prob, reward, entropy_weight=0.1)


def test_moving_average_baseline_numbers():
    baseline = MovingAverageBaseline(momentum=0.9)
    assert baseline(torch.tensor([1.0, 0.0])).item() == pytest.approx(0.5)  # first: batch mean
    assert baseline(torch.tensor([1.0, 1.0])).item() == pytest.approx(0.5)  # value before update
    assert baseline.value.item() == pytest.approx(0.9 * 0.5 + 0.1 * 1.0)
    baseline.eval()
    assert baseline(torch.tensor([0.0])).item() == pytest.approx(0.55)
    assert baseline.value.item() == pytest.approx(0.55)  # no update in eval mode
    with pytest.raises(ValueError, match="momentum"):
        MovingAverageBaseline(1.0)


def test_anneal_temperature_follows_jang_et_al():
    assert anneal_temperature(0) == 1.0
    assert anneal_temperature(1000, rate=1e-4) == pytest.approx(math.exp(-0.1))
    assert anneal_temperature(10**6, rate=1e-4) == 0.5
    assert anneal_temperature(1999, rate=1e-4, every=1000) == pytest.approx(math.exp(-0.1))
    with pytest.raises(ValueError, match="rate"):
        anneal_temperature(0, rate=-1.0)


# ----------------------------------------------------------------------------- learning


def _marked_item_batch(n, generator, num_items=8, classes=5, noise=4):
    """Sets of ``num_items`` items ``[marker, one-hot class, noise]``; the label is the class of
    the one marked item. Chance for a selector that ignores the marker:
    ``1/num_items + (1 - 1/num_items) / classes``."""
    labels = torch.randint(0, classes, (n, num_items), generator=generator)
    marked = torch.randint(0, num_items, (n,), generator=generator)
    items = torch.cat(
        [
            F.one_hot(marked, num_items).float().unsqueeze(-1),  # (n, I, 1)
            F.one_hot(labels, classes).float(),  # (n, I, C)
            torch.randn(n, num_items, noise, generator=generator),
        ],
        dim=-1,
    )  # (n, I, 1 + C + noise)
    return items, labels[torch.arange(n), marked]


class _Reader(torch.nn.Module):
    """A learned query selects one item; a linear layer classifies what it read."""

    def __init__(self, estimator, random_selector=False, dim=10, classes=5):
        super().__init__()
        self.random_selector = random_selector
        score = "dot" if random_selector else "additive"
        self.attention = HardAttention(dim, dim, score=score, estimator=estimator)
        self.query = torch.nn.Parameter(torch.randn(dim))
        self.classifier = torch.nn.Linear(dim, classes)
        self.baseline = MovingAverageBaseline()

    def forward(self, items):
        query = self.query.expand(len(items), -1)  # (B, D)
        if self.random_selector:  # all scores equal: a uniformly random (or fixed) choice
            query = torch.zeros_like(query)
        out = self.attention(query, items)
        return self.classifier(out.output), out

    def loss(self, items, labels):
        logits, out = self(items)
        loss = F.cross_entropy(logits, labels)
        if self.attention.estimator.name == "reinforce":
            reward = (logits.argmax(-1) == labels).float()
            loss = loss + reinforce_loss(out.log_prob, reward, self.baseline(reward))
        return loss


def _train_and_test(estimator, random_selector=False, steps=600):
    torch.manual_seed(11)
    model = _Reader(estimator, random_selector)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    generator = torch.Generator().manual_seed(12)
    for _ in range(steps):
        loss = model.loss(*_marked_item_batch(128, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        items, labels = _marked_item_batch(4000, torch.Generator().manual_seed(13))
        return (model(items)[0].argmax(-1) == labels).float().mean().item()


@pytest.mark.parametrize("estimator", ALL)
def test_each_estimator_learns_to_find_the_marked_item(estimator):
    assert _train_and_test(estimator) >= 0.95


def test_a_random_selector_stays_at_chance():
    chance = 1 / 8 + (1 - 1 / 8) / 5
    accuracy = _train_and_test("reinforce", random_selector=True)
    assert abs(accuracy - chance) < 0.03
