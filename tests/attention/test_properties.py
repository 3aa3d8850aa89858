"""Property-based tests (hypothesis) of the attention invariants."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit import MultiHeadAttention, SoftAttention
from attnkit.attention.functional import NORMALIZERS, normalize

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def scores_and_masks(draw):
    batch, queries, keys = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    spread = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))
    scores = torch.randn(batch, queries, keys, generator=gen, dtype=torch.float64) * spread
    mask = torch.rand(batch, queries, keys, generator=gen) > draw(st.floats(0.0, 0.9))
    return scores, mask


@SETTINGS
@given(data=scores_and_masks(), method=st.sampled_from(sorted(NORMALIZERS)))
def test_weights_are_distributions_over_allowed_keys(data, method):
    scores, mask = data
    weights = normalize(scores, mask, method)
    assert (weights >= 0).all()
    assert weights[~mask].eq(0).all()
    sums = weights.sum(-1)
    has_key = mask.any(-1)
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]))
    assert sums[~has_key].eq(0).all()


@SETTINGS
@given(data=scores_and_masks(), score=st.sampled_from(["dot", "general", "additive"]))
def test_soft_attention_masked_keys_do_not_matter(data, score):
    _, mask = data
    batch, queries, keys = mask.shape
    torch.manual_seed(0)
    att = SoftAttention(4, 4, score=score).double()
    query = torch.randn(batch, queries, 4, dtype=torch.float64)
    memory = torch.randn(batch, keys, 4, dtype=torch.float64)
    changed = memory + 5.0 * (~mask.any(1)).unsqueeze(-1)  # move keys that nobody may see
    first, second = att(query, memory, mask=mask), att(query, changed, mask=mask)
    torch.testing.assert_close(first.weights, second.weights)
    torch.testing.assert_close(first.output, second.output)


@SETTINGS
@given(
    length=st.integers(2, 12),
    heads=st.sampled_from([(4, 4), (4, 2), (4, 1)]),
    backend=st.sampled_from(["math", "sdpa"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_self_attention_without_positions_is_permutation_equivariant(length, heads, backend, seed):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(16, heads[0], num_kv_heads=heads[1], backend=backend).double()
    x = torch.randn(2, length, 16, dtype=torch.float64)
    perm = torch.randperm(length)
    torch.testing.assert_close(mha(x[:, perm]).output, mha(x).output[:, perm])


@SETTINGS
@given(length=st.integers(1, 10), seed=st.integers(0, 2**31 - 1))
def test_multihead_weights_are_distributions_with_masks(length, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mha = MultiHeadAttention(8, 2, causal=True)
    keep = torch.rand(3, length, generator=gen) > 0.3
    weights = mha(torch.randn(3, length, 8), mask=keep, need_weights=True).weights
    allowed = keep[:, None, None, :] & torch.ones(length, length, dtype=torch.bool).tril()
    assert weights[~allowed.expand_as(weights)].eq(0).all()
    sums = weights.sum(-1)
    has_key = allowed.any(-1).expand_as(sums)
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]))
