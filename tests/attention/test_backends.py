"""One conformance suite for every registered backend against the "math" reference.

In the style of PyTorch's test_transformers.py: each exact backend must give the reference's
outputs and gradients (fp64, so that differences are the kernel's and not rounding) on the same
inputs, over masks, causal and windowed attention, grouped-query heads and score biases.
"""

import pytest
import torch

from attnkit.attention import backends
from attnkit.attention.functional import causal_mask, window_mask
from attnkit.attention.positional import ALiBi

EXACT = [name for name in backends.available() if name != "auto" and backends.get(name).exact]

CASES = {
    # name: (B, H, Hkv, Q, K, D)
    "square": (2, 4, 4, 16, 16, 8),
    "gqa": (2, 6, 2, 16, 16, 8),
    "mqa": (1, 4, 1, 7, 7, 16),
    "cross": (2, 2, 2, 5, 11, 8),
    "decode": (2, 4, 2, 1, 13, 8),
    "prefill_chunk": (1, 2, 2, 4, 10, 8),
}


def _inputs(case, dtype=torch.float64, seed=0):
    b, h, hkv, q, k, d = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    shapes = [(b, h, q, d), (b, hkv, k, d), (b, hkv, k, d)]
    return [torch.randn(s, generator=gen, dtype=dtype, requires_grad=True) for s in shapes]


def _mask(kind, case):
    b, h, _, q, k, _ = CASES[case]
    gen = torch.Generator().manual_seed(7)
    if kind == "none":
        return None
    if kind == "key_padding":
        keep = torch.ones(b, 1, 1, k, dtype=torch.bool)
        keep[0, ..., -2:] = False
        return keep
    if kind == "random":
        return torch.rand(b, h, q, k, generator=gen) > 0.4
    if kind == "window":
        return window_mask(q, k, 3)
    if kind == "empty_rows":
        keep = torch.rand(b, 1, q, k, generator=gen) > 0.4
        keep[0, 0, 0] = False
        return keep
    raise AssertionError(kind)


def _run(name, inputs, **kwargs):
    out = backends.get(name).fn(*inputs, **kwargs).output
    grads = torch.autograd.grad(out, inputs, torch.ones_like(out) * 0.1 + out.detach())
    return out, grads


@pytest.mark.parametrize("backend", EXACT)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mask", ["none", "key_padding", "random", "window", "empty_rows"])
@pytest.mark.parametrize("causal", [False, True])
def test_exact_backend_conforms_to_math(backend, case, mask, causal):
    inputs = _inputs(case)
    kwargs = {"mask": _mask(mask, case), "causal": causal}
    expected, expected_grads = _run("math", inputs, **kwargs)
    out, grads = _run(backend, inputs, **kwargs)
    assert not out.isnan().any()
    torch.testing.assert_close(out, expected)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("backend", EXACT)
@pytest.mark.parametrize("case", ["square", "gqa", "decode"])
def test_exact_backend_conforms_with_bias_and_scale(backend, case):
    _, h, _, q, k, _ = CASES[case]
    inputs = _inputs(case)
    bias = ALiBi(h).bias(q, k, torch.device("cpu")).double()
    kwargs = {"bias": bias, "causal": True, "scale": 0.3, "mask": _mask("key_padding", case)}
    expected, expected_grads = _run("math", inputs, **kwargs)
    out, grads = _run(backend, inputs, **kwargs)
    torch.testing.assert_close(out, expected)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("backend", EXACT)
def test_exact_backend_conforms_in_float32(backend):
    inputs = _inputs("gqa", dtype=torch.float32)
    expected, _ = _run("math", inputs, causal=True)
    out, _ = _run(backend, inputs, causal=True)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("backend", EXACT)
def test_exact_backend_in_bfloat16_is_close_to_the_float32_reference(backend):
    inputs = [t.detach().bfloat16() for t in _inputs("gqa", dtype=torch.float32)]
    keep = _mask("key_padding", "gqa")
    expected = backends.math_attention(*(t.float() for t in inputs), mask=keep, causal=True)
    out = backends.get(backend).fn(*inputs, mask=keep, causal=True)
    assert out.output.dtype == torch.bfloat16
    torch.testing.assert_close(out.output.float(), expected.output, atol=2e-2, rtol=2e-2)


def test_math_weights_follow_the_definition():
    query, key, value = (t.detach() for t in _inputs("cross"))
    keep = _mask("random", "cross")
    out = backends.math_attention(query, key, value, mask=keep, need_weights=True)
    scores = query @ key.transpose(-1, -2) / 8**0.5
    expected = scores.masked_fill(~keep, float("-inf")).softmax(-1).nan_to_num(0.0)
    torch.testing.assert_close(out.weights, expected)
    torch.testing.assert_close(out.output, expected @ value)


def _linear_oracle(query, key, value, keep):
    """Linear attention written out weight by weight: w_ij ∝ φ(q_i)·φ(k_j) over allowed j."""
    phi = torch.nn.functional.elu
    group = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)
    out = torch.zeros(*query.shape[:3], value.shape[-1], dtype=query.dtype)
    for b in range(query.shape[0]):
        for h in range(query.shape[1]):
            for i in range(query.shape[2]):
                total, norm = 0.0, 0.0
                for j in range(key.shape[2]):
                    if keep[b, 0, i, j]:
                        sim = ((phi(query[b, h, i]) + 1) * (phi(key[b, h, j]) + 1)).sum()
                        total, norm = total + sim * value[b, h, j], norm + sim
                if keep[b, 0, i].any():
                    out[b, h, i] = total / norm
    return out


@pytest.mark.parametrize("case", ["square", "gqa", "decode", "prefill_chunk", "cross"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [False, True])
def test_linear_attention_matches_its_definition(case, causal, padding):
    b, _, _, q, k, _ = CASES[case]
    query, key, value = (t.detach() for t in _inputs(case))
    key_mask = _mask("key_padding", case) if padding else None
    keep = torch.ones(b, 1, q, k, dtype=torch.bool)
    if padding:
        keep = keep & key_mask
    if causal:
        keep = keep & causal_mask(q, k)
    expected = _linear_oracle(query, key, value, keep)
    out = backends.get("linear").fn(query, key, value, mask=key_mask, causal=causal)
    torch.testing.assert_close(out.output, expected)
    with_weights = backends.get("linear").fn(
        query, key, value, mask=key_mask, causal=causal, need_weights=True
    )
    torch.testing.assert_close(with_weights.output, expected)
    assert with_weights.weights[~keep.expand_as(with_weights.weights)].eq(0).all()


def test_linear_causal_attention_across_many_chunks(monkeypatch):
    from attnkit.attention import linear

    monkeypatch.setattr(linear, "CHUNK", 3)
    query, key, value = (t.detach() for t in _inputs("square"))
    chunked = linear.linear_attention(query, key, value, causal=True).output
    quadratic = linear.linear_attention(query, key, value, causal=True, need_weights=True).output
    torch.testing.assert_close(chunked, quadratic)


def test_linear_attention_refuses_what_it_cannot_do():
    query, key, value = (t.detach() for t in _inputs("square"))
    linear = backends.get("linear").fn
    with pytest.raises(ValueError, match="key masks"):
        linear(query, key, value, mask=_mask("window", "square"))
    with pytest.raises(ValueError, match="score bias"):
        linear(query, key, value, bias=torch.zeros(16, 16))
    with pytest.raises(ValueError, match="dropout_p"):
        linear(query, key, value, dropout_p=0.1)


def test_linear_attention_is_an_approximation():
    """It is a different function from softmax attention: the docs must not promise otherwise."""
    inputs = [t.detach() for t in _inputs("square")]
    exact = backends.math_attention(*inputs).output
    approx = backends.get("linear").fn(*inputs).output
    assert (exact - approx).abs().max() > 1e-2


def test_registry():
    assert {"auto", "math", "sdpa", "linear"} <= set(backends.available())
    assert backends.resolve("auto", need_weights=False).name == "sdpa"
    assert backends.resolve("auto", need_weights=True).name == "math"
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.get("flash9")
    with pytest.raises(ValueError, match="already registered"):
        backends.register("math", backends.math_attention)
    with pytest.raises(ValueError, match="reserved"):
        backends.register("auto", backends.math_attention)


def test_a_registered_backend_is_used_by_modules(monkeypatch):
    from attnkit import MultiHeadAttention

    calls = []

    def spy(query, key, value, **kwargs):
        calls.append(query.shape)
        return backends.math_attention(query, key, value, **kwargs)

    monkeypatch.setitem(backends._REGISTRY, "spy", backends.Backend("spy", spy, weights=True))
    mha = MultiHeadAttention(16, 2, backend="spy")
    reference = MultiHeadAttention(16, 2, backend="sdpa")
    reference.load_state_dict(mha.state_dict())
    x = torch.randn(1, 3, 16)
    torch.testing.assert_close(mha(x).output, reference(x).output)
    assert calls == [(1, 2, 3, 8)]


def test_heads_must_divide():
    query = torch.randn(1, 3, 4, 8)
    key = torch.randn(1, 2, 4, 8)
    for name in ["math", "sdpa", "linear"]:
        with pytest.raises(ValueError, match="multiple of key/value heads"):
            backends.get(name).fn(query, key, key)


# ------------------------------------------------------------------------ math without autograd


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mask", ["none", "key_padding", "random", "window", "empty_rows"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_math_without_autograd_gives_the_autograd_path_bit_for_bit(case, mask, causal, dtype):
    # the in-place path (one allocation for the weights) against the out-of-place one autograd
    # differentiates: same weights and outputs, bit for bit, with a power-of-two scale (applied
    # to the queries), another scale and a bias (ALiBi)
    _, h, _, q, k, _ = CASES[case]
    query, key, value = (t.detach().to(dtype) for t in _inputs(case))
    bias = ALiBi(h).bias(q, k, torch.device("cpu")).to(dtype)
    for scale, with_bias in [(None, False), (0.25, True), (0.3, False), (0.3, True)]:
        kwargs = {
            "mask": _mask(mask, case),
            "causal": causal,
            "scale": scale,
            "bias": bias if with_bias else None,
            "need_weights": True,
        }
        with torch.no_grad():
            fast = backends.math_attention(query, key, value, **kwargs)
        slow = backends.math_attention(query.requires_grad_(), key, value, **kwargs)
        query.requires_grad_(False)
        assert slow.weights.requires_grad and not fast.weights.requires_grad
        assert torch.equal(fast.weights, slow.weights.detach())
        assert torch.equal(fast.output, slow.output.detach())
        assert not fast.output.isnan().any() and not fast.weights.isnan().any()


def test_math_without_autograd_leaves_its_inputs_alone_and_zeroes_empty_rows():
    query, key, value = (t.detach() for t in _inputs("gqa"))
    keep = _mask("empty_rows", "gqa")  # row 0 of example 0 has no allowed key
    bias = ALiBi(6).bias(16, 16, torch.device("cpu")).double()
    copies = [t.clone() for t in (query, key, value, keep, bias)]
    with torch.no_grad():
        out = backends.math_attention(
            query, key, value, mask=keep, bias=bias, causal=True, need_weights=True
        )
    for original, copy in zip((query, key, value, keep, bias), copies, strict=True):
        assert torch.equal(original, copy)
    assert torch.equal(out.weights[0, :, 0], torch.zeros(6, 16, dtype=torch.float64))
    assert torch.equal(out.output[0, :, 0], torch.zeros(6, 8, dtype=torch.float64))
    allowed = keep & causal_mask(16, 16)
    assert (out.weights[~allowed.expand(2, 6, 16, 16)] == 0).all()  # exactly zero, not tiny
    rows = out.weights.sum(-1)  # 1 for a query with an allowed key, 0 for none
    expected = allowed.any(-1).expand(2, 6, 16).double()
    torch.testing.assert_close(rows, expected)


def test_math_without_autograd_keeps_a_nan_of_the_inputs():
    # fully masked rows are zeroed; a NaN that comes from the inputs must not be hidden
    query, key, value = (t.detach().clone() for t in _inputs("square"))
    keep = _mask("empty_rows", "square")
    query[1, 2, 3, 0] = float("nan")  # example 1 has no empty row
    with torch.no_grad():
        out = backends.math_attention(query, key, value, mask=keep, need_weights=True)
    assert out.output[1, 2, 3].isnan().all() and out.weights[1, 2, 3].isnan().all()
    assert not out.output[0].isnan().any()
    assert torch.equal(out.output[0, :, 0], torch.zeros(4, 8, dtype=torch.float64))


def test_math_without_autograd_allocates_the_weights_once():
    # one (B, H, Q, K) allocation, the tensor returned: the scores, scale, mask and softmax all
    # go into it (profiled allocations of at least the weights' size)
    from torch.profiler import profile

    gen = torch.Generator().manual_seed(0)
    query = torch.randn(1, 4, 256, 16, generator=gen)
    key, value = (torch.randn(1, 2, 256, 16, generator=gen) for _ in range(2))
    keep = torch.rand(1, 1, 1, 256, generator=gen) > 0.2
    nbytes = 4 * 256 * 256 * 4
    with torch.no_grad(), profile(profile_memory=True) as prof:
        out = backends.math_attention(
            query, key, value, mask=keep, causal=True, scale=0.3, need_weights=True
        )
    big = [e for e in prof.events() if e.cpu_memory_usage >= nbytes]
    assert len(big) == 1, [(e.name, e.cpu_memory_usage) for e in big]
    assert out.weights.is_contiguous() and out.weights.untyped_storage().nbytes() == nbytes
