"""MultiHeadAttention against torch.nn.MultiheadAttention, and its own features."""

import pytest
import torch
from torch import nn

from attnkit import KVCache, MultiHeadAttention
from attnkit.attention.functional import drop_heads
from attnkit.attention.positional import alibi_slopes

E, H, B, T = 32, 4, 2, 9


def _torch_mha(dtype, kdim=None, vdim=None, seed=0):
    torch.manual_seed(seed)
    module = nn.MultiheadAttention(E, H, batch_first=True, kdim=kdim, vdim=vdim, dtype=dtype)
    with torch.no_grad():  # non-zero biases so that copying them is tested too
        module.in_proj_bias.normal_()
        module.out_proj.bias.normal_()
    return module.eval()


def _masks(kind):
    """(attnkit mask: True = attend, torch kwargs: True = blocked)."""
    gen = torch.Generator().manual_seed(1)
    if kind == "none":
        return None, {}
    if kind == "key_padding":
        keep = torch.ones(B, T, dtype=torch.bool)
        keep[0, -3:] = False
        return keep, {"key_padding_mask": ~keep}
    if kind == "attn_mask":
        keep = torch.rand(T, T, generator=gen) > 0.3
        keep[:, 0] = True  # torch's reference gives NaN for rows with no key
        return keep[None], {"attn_mask": ~keep}
    if kind == "causal":
        keep = torch.ones(T, T, dtype=torch.bool).tril()
        return keep[None], {"attn_mask": ~keep}
    raise AssertionError(kind)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["none", "key_padding", "attn_mask", "causal"])
@pytest.mark.parametrize("need_weights", [False, True])
def test_from_torch_matches_outputs_weights_and_gradients(dtype, kind, need_weights):
    reference = _torch_mha(dtype)
    ours = MultiHeadAttention.from_torch(reference)
    x = torch.randn(B, T, E, dtype=dtype)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    mask, torch_kwargs = _masks(kind)

    expected, expected_weights = reference(
        x_ref, x_ref, x_ref, need_weights=True, average_attn_weights=False, **torch_kwargs
    )
    out = ours(x_ours, mask=mask, need_weights=need_weights)
    torch.testing.assert_close(out.output, expected)
    if need_weights:
        torch.testing.assert_close(out.weights, expected_weights)
    else:
        assert out.weights is None

    grad = torch.randn_like(expected)
    expected.backward(grad)
    out.output.backward(grad)
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    torch.testing.assert_close(ours.in_proj_weight.grad, reference.in_proj_weight.grad)
    torch.testing.assert_close(ours.in_proj_bias.grad, reference.in_proj_bias.grad)
    torch.testing.assert_close(ours.out_proj.weight.grad, reference.out_proj.weight.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_from_torch_cross_attention_with_other_key_and_value_sizes(dtype):
    reference = _torch_mha(dtype, kdim=12, vdim=20)
    ours = MultiHeadAttention.from_torch(reference)
    query = torch.randn(B, 5, E, dtype=dtype)
    key, value = torch.randn(B, 7, 12, dtype=dtype), torch.randn(B, 7, 20, dtype=dtype)
    expected, weights = reference(query, key, value, average_attn_weights=False)
    out = ours(query, key, value, need_weights=True)
    torch.testing.assert_close(out.output, expected)
    torch.testing.assert_close(out.weights, weights)


def test_from_torch_cross_attention_same_sizes_uses_sliced_weights():
    reference = _torch_mha(torch.float32)
    ours = MultiHeadAttention.from_torch(reference)
    query, memory = torch.randn(B, 4, E), torch.randn(B, 6, E)
    torch.testing.assert_close(ours(query, memory).output, reference(query, memory, memory)[0])


def test_from_torch_rejects_what_it_cannot_copy():
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(E, H, add_bias_kv=True))
    with pytest.raises(TypeError, match="nn.MultiheadAttention"):
        MultiHeadAttention.from_torch(nn.Linear(2, 2))


def test_from_torch_without_bias():
    reference = nn.MultiheadAttention(E, H, bias=False, batch_first=True)
    ours = MultiHeadAttention.from_torch(reference)
    assert ours.in_proj_bias is None and ours.out_proj.bias is None
    x = torch.randn(B, T, E)
    torch.testing.assert_close(ours(x).output, reference(x, x, x)[0])


def _expand_kv_heads(gqa: MultiHeadAttention) -> MultiHeadAttention:
    """An ordinary multi-head module computing the same function as a grouped-query one."""
    full = MultiHeadAttention(gqa.embed_dim, gqa.num_heads, causal=gqa.causal)
    group, d = gqa.num_heads // gqa.num_kv_heads, gqa.head_dim
    wq, wk, wv = gqa.in_proj_weight.split(gqa._sizes)
    bq, bk, bv = gqa.in_proj_bias.split(gqa._sizes)

    def repeat(t):  # kv head h serves query heads h·group .. h·group + group - 1
        return t.view(gqa.num_kv_heads, d, *t.shape[1:]).repeat_interleave(group, 0).flatten(0, 1)

    with torch.no_grad():
        full.in_proj_weight.copy_(torch.cat([wq, repeat(wk), repeat(wv)]))
        full.in_proj_bias.copy_(torch.cat([bq, repeat(bk), repeat(bv)]))
        full.out_proj.load_state_dict(gqa.out_proj.state_dict())
    return full


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_grouped_and_multi_query_attention_equal_repeated_heads(num_kv_heads):
    torch.manual_seed(0)
    gqa = MultiHeadAttention(E, H, num_kv_heads=num_kv_heads, causal=True)
    with torch.no_grad():
        gqa.in_proj_bias.normal_()
    assert gqa.in_proj_weight.shape == (E + 2 * num_kv_heads * E // H, E)
    full = _expand_kv_heads(gqa)
    x = torch.randn(B, T, E)
    torch.testing.assert_close(gqa(x).output, full(x).output)
    torch.testing.assert_close(
        gqa(x, need_weights=True).weights, full(x, need_weights=True).weights
    )


def test_causal_output_ignores_the_future():
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, causal=True)
    x = torch.randn(B, T, E)
    changed = x.clone()
    changed[:, 5:] = torch.randn(B, T - 5, E)
    torch.testing.assert_close(mha(x).output[:, :5], mha(changed).output[:, :5])
    assert not torch.allclose(mha(x).output[:, 5:], mha(changed).output[:, 5:])
    weights = mha(x, need_weights=True).weights
    assert weights.triu(1).eq(0).all()


def test_sliding_window():
    torch.manual_seed(0)
    x = torch.randn(B, T, E)
    local = MultiHeadAttention(E, H, causal=True, window=3)
    weights = local(x, need_weights=True).weights
    distance = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    assert weights[..., (distance >= 3) | (distance < 0)].eq(0).all()
    assert weights[..., (distance < 3) & (distance >= 0)].gt(0).all()
    wide = MultiHeadAttention(E, H, causal=True, window=T)
    wide.load_state_dict(local.state_dict())
    plain = MultiHeadAttention(E, H, causal=True)
    plain.load_state_dict(local.state_dict())
    torch.testing.assert_close(wide(x).output, plain(x).output)


def test_alibi_weights_follow_the_formula():
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, causal=True, positions="alibi")
    x = torch.randn(1, T, E, dtype=torch.float64)
    mha.double()
    q, k, _ = torch.nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias).split(E, -1)
    q = q.view(1, T, H, E // H).transpose(1, 2)
    k = k.view(1, T, H, E // H).transpose(1, 2)
    distance = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).double()
    bias = -alibi_slopes(H).double()[:, None, None] * distance
    scores = q @ k.transpose(-1, -2) / (E // H) ** 0.5 + bias
    scores = scores.masked_fill(distance < 0, float("-inf"))
    expected = scores.softmax(-1)
    torch.testing.assert_close(mha(x, need_weights=True).weights, expected)
    torch.testing.assert_close(mha(x).output, mha(x, need_weights=True).output)


def test_alibi_slopes_follow_the_paper():
    assert alibi_slopes(8).tolist() == [2.0**-i for i in range(1, 9)]
    # 6 heads: the 4-head slopes, then every other 8-head slope (Press et al.'s get_slopes)
    assert alibi_slopes(6).tolist() == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]


def _decode(mha, x, prefill):
    cache = KVCache()
    steps = [mha(x[:, :prefill], cache=cache).output] if prefill else []
    steps += [mha(x[:, t : t + 1], cache=cache).output for t in range(prefill, x.shape[1])]
    assert len(cache) == x.shape[1]
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_kv_heads": 2},
        {"positions": "rope"},
        {"positions": "alibi"},
        {"window": 3},
        {"num_kv_heads": 1, "positions": "rope", "window": 4},
    ],
    ids=["plain", "gqa", "rope", "alibi", "window", "mqa-rope-window"],
)
@pytest.mark.parametrize("prefill", [0, 4])
def test_kv_cache_decoding_equals_the_full_causal_run(options, prefill):
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, causal=True, **options).eval()
    x = torch.randn(B, T, E)
    full = mha(x).output
    torch.testing.assert_close(_decode(mha, x, prefill), full)
    reference = mha(x, need_weights=True)
    cache = KVCache()
    mha(x[:, :-1], cache=cache)
    last = mha(x[:, -1:], cache=cache, need_weights=True)
    torch.testing.assert_close(last.weights, reference.weights[:, :, -1:])


def test_kv_cache_with_padding_mask_over_cached_positions():
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, causal=True).eval()
    x = torch.randn(B, T, E)
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[1, :2] = False  # left padding in the second example
    full = mha(x, mask=keep).output
    cache = KVCache()
    steps = [mha(x[:, t : t + 1], cache=cache, mask=keep[:, : t + 1]).output for t in range(T)]
    torch.testing.assert_close(torch.cat(steps, 1)[:, 2:], full[:, 2:])


def test_cache_is_for_self_attention_and_must_fit():
    mha = MultiHeadAttention(E, H)
    with pytest.raises(ValueError, match="cache is for self-attention"):
        mha(torch.randn(1, 2, E), torch.randn(1, 3, E), cache=KVCache())
    cache = KVCache()
    mha(torch.randn(1, 2, E), cache=cache)
    with pytest.raises(ValueError, match="does not fit a cache"):
        mha(torch.randn(2, 1, E), cache=cache)
    cache.reset()
    assert len(cache) == 0


def test_rope_scores_depend_on_relative_position_only():
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, positions="rope")
    rope = mha.positions
    q, k = (
        torch.randn(1, H, 1, E // H, dtype=torch.float64),
        torch.randn(1, H, 1, E // H, dtype=torch.float64),
    )

    def score(m, n):
        qm = rope.rotate_at(q, torch.tensor([m]))
        kn = rope.rotate_at(k, torch.tensor([n]))
        return (qm * kn).sum(-1)

    torch.testing.assert_close(score(7, 3), score(107, 103))
    torch.testing.assert_close(score(0, 0), (q * k).sum(-1))
    assert not torch.allclose(score(7, 3), score(3, 7))
    torch.testing.assert_close(rope.rotate_at(q, torch.tensor([5])).norm(), q.norm())


def test_positions_refuse_cross_attention_and_unknown_names():
    with pytest.raises(ValueError, match="self-attention only"):
        MultiHeadAttention(E, H, positions="rope")(torch.randn(1, 2, E), torch.randn(1, 3, E))
    with pytest.raises(ValueError, match="positions must be"):
        MultiHeadAttention(E, H, positions="learned")
    with pytest.raises(ValueError, match="head_dim must be even"):
        MultiHeadAttention(12, 4, positions="rope")


def test_dropout_only_in_training_and_unbiased():
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, dropout=0.5)
    x = torch.randn(1, T, E)
    mha.eval()
    clean = mha(x).output
    torch.testing.assert_close(mha(x).output, clean)
    mha.train()
    first, second = mha(x).output, mha(x).output
    assert not torch.allclose(first, second)
    weights = mha(x, need_weights=True).weights  # before dropout
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, H, T))
    with torch.no_grad():
        mean = torch.stack([mha(x).output for _ in range(2000)]).mean(0)
    torch.testing.assert_close(mean, clean, atol=0.03, rtol=0.0)


def test_drophead_drops_whole_heads_and_rescales():
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, head_dropout=0.5, bias=False)
    x = torch.randn(64, T, E)
    mha.eval()
    clean = mha(x).output
    # per-head outputs before the output projection: its inverse recovers them
    inverse = torch.linalg.inv(mha.out_proj.weight.T)
    clean_heads = (clean @ inverse).view(64, T, H, E // H)
    mha.train()
    with torch.no_grad():
        heads = (mha(x).output @ inverse).view(64, T, H, E // H)
    ratio = heads.norm(dim=(1, 3)) / clean_heads.norm(dim=(1, 3))  # (B, H)
    kept = ratio > 1e-3
    assert kept.any() and not kept.all()
    # a kept head is scaled by H / kept heads of its example; a dropped one is zero everywhere
    expected = H / kept.sum(1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(ratio, kept * expected, atol=1e-4, rtol=1e-4)
    assert mha(x, need_weights=True).weights.sum(-1).allclose(torch.ones(1))


def test_drop_heads_keeps_the_scale_on_average():
    heads = torch.randn(1, H, T, 8)
    generator = torch.Generator().manual_seed(0)
    mean = torch.stack([drop_heads(heads, 0.25, generator).sum(1) for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, heads.sum(1), atol=0.1, rtol=0.0)
    assert drop_heads(heads, 0.0) is heads
    with pytest.raises(ValueError, match=r"heads must be \(B, H, Q, D\)"):
        drop_heads(heads[0], 0.5)


@pytest.mark.parametrize("backend", ["auto", "math", "sdpa"])
def test_fully_masked_query_gives_no_nan(backend):
    mha = MultiHeadAttention(E, H, backend=backend, bias=False)
    x = torch.randn(B, T, E, requires_grad=True)
    keep = torch.ones(B, T, T, dtype=torch.bool)
    keep[0, 3] = False
    out = mha(x, mask=keep).output
    assert out[0, 3].eq(0).all() and not out.isnan().any()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_weights_are_per_head_distributions():
    mha = MultiHeadAttention(E, H)
    out = mha(torch.randn(B, T, E), need_weights=True)
    assert out.weights.shape == (B, H, T, T)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(B, H, T))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embed_dim": 30, "num_heads": 4}, "must be divisible by num_heads"),
        ({"num_kv_heads": 3}, "num_kv_heads must be a positive divisor"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"head_dropout": -0.1}, "head_dropout must be in"),
        ({"window": 0}, "window must be a positive integer"),
        ({"backend": "flash3"}, "backend must be one of"),
        ({"embed_dim": 0}, "must be positive"),
    ],
)
def test_constructor_errors(kwargs, match):
    args = {"embed_dim": E, "num_heads": H, **kwargs}
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(**args)


def test_forward_errors_name_the_argument():
    mha = MultiHeadAttention(E, H)
    with pytest.raises(ValueError, match=r"query must be \(B, T, 32\)"):
        mha(torch.randn(B, T, E + 1))
    with pytest.raises(ValueError, match=r"query must be"):
        mha(torch.randn(T, E))
    with pytest.raises(ValueError, match="same batch size"):
        mha(torch.randn(2, T, E), torch.randn(3, T, E))
    with pytest.raises(ValueError, match="value must be"):
        mha(torch.randn(B, T, E), torch.randn(B, T, E), torch.randn(B, T + 1, E))
    with pytest.raises(TypeError, match="one floating dtype"):
        mha(torch.randn(B, T, E), torch.randn(B, T, E, dtype=torch.float64))
    with pytest.raises(TypeError, match="mask must have dtype torch.bool"):
        mha(torch.randn(B, T, E), mask=torch.ones(B, T))
    with pytest.raises(ValueError, match="mask must be a"):
        mha(torch.randn(B, T, E), mask=torch.ones(B, T + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not return attention weights"):
        MultiHeadAttention(E, H, backend="sdpa")(torch.randn(B, T, E), need_weights=True)


def test_repr_names_the_options():
    text = repr(MultiHeadAttention(E, H, num_kv_heads=2, causal=True, window=4))
    assert "num_kv_heads=2" in text and "causal=True" in text and "window=4" in text
