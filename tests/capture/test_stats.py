"""Streamed statistics against the same statistics read off materialized weights."""

import math

import pytest
import torch

from attnkit.attention.backends import math_attention
from attnkit.attention.positional import ALiBi
from attnkit.recording import kernel
from attnkit.recording import stats as S

ALL = ("entropy", "max", "argmax", "sink")
SPANS = {"context": (3, 40), "tail": (60, 200)}


def test_stats_from_weights_hand_computed():
    weights = torch.tensor([[[[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]]]], dtype=torch.float64)
    got = S.stats_from_weights(weights, ALL, {"mid": (1, 3)})
    p = [0.1, 0.2, 0.3, 0.4]
    torch.testing.assert_close(
        got["entropy"][0, 0],
        torch.tensor([math.log(2), -sum(x * math.log(x) for x in p)], dtype=torch.float64),
    )
    assert got["max"][0, 0].tolist() == [0.5, 0.4]
    assert got["argmax"][0, 0].tolist() == [0, 3]
    assert got["sink"][0, 0].tolist() == [0.5, 0.1]
    torch.testing.assert_close(got["mass:mid"][0, 0], torch.tensor([0.5, 0.5], dtype=torch.float64))


def _case(dv, causal, gqa, masked, bias, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, h, q, k, d = 2, 4, 37, 211, 16
    hkv = 2 if gqa else h

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    inputs = [randn(b, h, q, d), randn(b, hkv, k, d), randn(b, hkv, k, dv)]
    mask = None
    if masked:
        mask = torch.rand(b, 1, q, k, generator=gen) > 0.3
        mask[0, 0, 4] = False  # a query that may attend nowhere
    extra = ALiBi(h).bias(q, k, torch.device("cpu")).double() if bias else None
    return inputs, {"mask": mask, "causal": causal, "bias": extra}


@pytest.mark.parametrize("dv", [16, 8], ids=["same_width", "narrow_values"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_streamed_stats_equal_the_weights_statistics(monkeypatch, dv, causal, gqa, masked, bias):
    monkeypatch.setattr(S, "BLOCK", 64)  # several key blocks
    inputs, kwargs = _case(dv, causal, gqa, masked, bias)
    reference = math_attention(*inputs, need_weights=True, **kwargs)
    expected = S.stats_from_weights(reference.weights, ALL, SPANS)
    out = S.attention_stats(*inputs, stats=ALL, spans=SPANS, **kwargs)
    torch.testing.assert_close(out.output, reference.output)
    assert set(out.stats) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(out.stats[name], value, msg=name)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Count the calls that reach attnkit's fused CPU kernel."""
    if not kernel.is_available():
        pytest.skip("attnkit's CPU statistics kernel could not be built here (no C++ compiler)")
    calls = []

    def counted(*args):
        calls.append(args)
        return original(*args)

    original = kernel.flash_stats
    monkeypatch.setattr(kernel, "flash_stats", counted)
    return calls


@pytest.mark.parametrize("shape", [(37, 211), (211, 211), (1, 600), (300, 700)])
@pytest.mark.parametrize("dv", [16, 8], ids=["same_width", "narrow_values"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_kernel_equals_the_weights_statistics(kernel_calls, shape, dv, causal, gqa, masked):
    gen = torch.Generator().manual_seed(sum(shape) + dv)
    num_queries, num_keys = shape
    heads, kv_heads = 4, 2 if gqa else 4
    q = torch.randn(2, heads, num_queries, 16, generator=gen)
    k = 3 * torch.randn(2, kv_heads, num_keys, 16, generator=gen)  # sharp attention
    v = torch.randn(2, kv_heads, num_keys, dv, generator=gen)
    mask = None
    if masked:
        mask = torch.rand(2, 1, 1, num_keys, generator=gen) > 0.3
        mask[1, 0, 0, : num_keys - num_queries + 1] = False  # early queries with no key
    spans = {"context": (3, 40), "tail": (60, num_keys)}
    reference = math_attention(q, k, v, mask=mask, causal=causal, need_weights=True)
    expected = S.stats_from_weights(reference.weights, ALL, spans)
    out = S.attention_stats(q, k, v, mask=mask, causal=causal, stats=ALL, spans=spans)
    assert len(kernel_calls) == (num_queries * num_keys > S.BLOCK**2)  # else one plain tile
    torch.testing.assert_close(out.output, reference.output, atol=1e-5, rtol=0)
    for name, value in expected.items():
        if name == "argmax":  # ties aside, the same key
            assert (out.stats[name] != value).float().mean() < 1e-3
        else:
            torch.testing.assert_close(out.stats[name], value, atol=1e-5, rtol=0, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by hand)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(37, 211), (300, 700), (1, 600)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_gpu_kernel_equals_the_weights_statistics(dtype, shape, causal, masked):
    gen = torch.Generator().manual_seed(sum(shape))
    num_queries, num_keys = shape
    q = torch.randn(2, 4, num_queries, 64, generator=gen)
    k = 2 * torch.randn(2, 2, num_keys, 64, generator=gen)
    v = torch.randn(2, 2, num_keys, 48, generator=gen)  # narrower values
    mask = None
    if masked:
        mask = torch.rand(2, 1, 1, num_keys, generator=gen) > 0.3
        mask[1, 0, 0, : num_keys - num_queries + 1] = False  # early queries with no key
    spans = {"context": (3, 40), "tail": (60, num_keys)}
    cuda = [t.cuda().to(dtype) for t in (q, k, v)]
    exact = [t.double().cpu() for t in cuda]  # the same rounded inputs, in float64
    reference = math_attention(*exact, mask=mask, causal=causal, need_weights=True)
    expected = S.stats_from_weights(reference.weights, ALL, spans)
    out = S.attention_stats(
        *cuda, mask=None if mask is None else mask.cuda(), causal=causal, stats=ALL, spans=spans
    )
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2  # P is rounded to bf16 for P·V
    output = out.output.double().cpu()
    torch.testing.assert_close(output, reference.output, atol=tolerance, rtol=0)
    for name, value in expected.items():
        got = out.stats[name].cpu()
        if name == "argmax":  # the key it names holds the largest weight, ties aside
            chosen = reference.weights.gather(-1, got.unsqueeze(-1)).squeeze(-1)
            torch.testing.assert_close(chosen, expected["max"], atol=tolerance, rtol=0)
        else:
            torch.testing.assert_close(got.double(), value, atol=tolerance, rtol=0, msg=name)


def test_kernel_is_skipped_where_it_does_not_apply(kernel_calls):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 300, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    S.attention_stats(q, k, v, stats=ALL)  # float64
    q, k, v = (t.float().requires_grad_() for t in (q, k, v))
    S.attention_stats(q, k, v, stats=ALL)  # autograd
    with torch.no_grad():
        S.attention_stats(q, k, v, stats=ALL, bias=torch.zeros(300, 300))  # a score bias
    assert kernel_calls == []
    with torch.no_grad():
        S.attention_stats(q, k, v, stats=ALL)
    assert len(kernel_calls) == 1


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_online_softmax_equals_the_fused_kernel(monkeypatch, causal, masked, bias):
    """The path for devices without PyTorch's CPU flash kernel gives the same output and lse."""
    monkeypatch.setattr(S, "BLOCK", 64)
    inputs, kwargs = _case(16, causal, False, masked, bias)
    mask = kwargs["mask"]
    args = (mask, kwargs["bias"], causal, 0.25)
    fused_out, fused_lse = S._fused(*inputs, *args)
    online_out, online_lse = S._online(*inputs, *args)
    torch.testing.assert_close(online_out, fused_out)
    rows = (
        torch.ones_like(fused_lse, dtype=torch.bool)
        if mask is None
        else mask.any(-1).expand_as(fused_lse)
    )
    torch.testing.assert_close(online_lse[rows], fused_lse[rows])


@pytest.mark.parametrize("block", [512, 64], ids=["one-tile", "streamed"])
def test_query_with_no_allowed_key_gets_zeros(monkeypatch, block):
    monkeypatch.setattr(S, "BLOCK", block)
    inputs, kwargs = _case(16, False, False, True, False)
    out = S.attention_stats(*inputs, stats=ALL, spans=SPANS, **kwargs)
    for name, value in out.stats.items():
        assert value[0, :, 4].eq(0).all(), name
    assert out.output[0, :, 4].eq(0).all()


def test_float32_within_1e_5(monkeypatch):
    monkeypatch.setattr(S, "BLOCK", 64)
    inputs, kwargs = _case(16, True, True, True, False, seed=3)
    inputs = [t.float() * 3 for t in inputs]  # sharp attention, large scores
    reference = math_attention(*inputs, need_weights=True, **kwargs)
    expected = S.stats_from_weights(reference.weights, ALL, SPANS)
    out = S.attention_stats(*inputs, stats=ALL, spans=SPANS, **kwargs)
    for name in ("entropy", "max", "sink", "mass:context"):
        torch.testing.assert_close(out.stats[name], expected[name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize(
    ("stats", "spans", "match"),
    [
        (("entropy", "variance"), None, "stats must be among"),
        (("mass:ctx",), None, "needs spans"),
        ((), {"ctx": (5, 2)}, "0 <= start < stop"),
        ((), {"ctx": "0:5"}, "must be"),
    ],
)
def test_check_stats_errors(stats, spans, match):
    with pytest.raises(ValueError, match=match):
        S.check_stats(stats, spans)


def test_check_stats_adds_span_masses_once():
    names, spans = S.check_stats("entropy", {"ctx": [0, 4]})
    assert names == ("entropy", "mass:ctx")
    assert spans == {"ctx": (0, 4)}


def _largest_allocation(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(event.cpu_memory_usage for event in prof.events())


def test_no_query_by_key_matrix_is_allocated():
    """The largest single allocation is a tile or an O(N·D) copy, far below H·N² floats."""
    n, heads = 2048, 8
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, n, 64, generator=gen)
    k, v = (torch.randn(1, heads // 2, n, 64, generator=gen) for _ in range(2))
    full_matrix = heads * n * n * 4
    streamed = _largest_allocation(
        lambda: S.attention_stats(q, k, v, causal=True, stats=ALL, spans={"c": (0, 100)})
    )
    materialized = _largest_allocation(lambda: math_attention(q, k, v, need_weights=True))
    assert materialized >= full_matrix
    linear = 2 * q.numel() * 4  # (B, H, N, D)-sized copies, padded a column or two
    assert streamed <= max(heads * S.BLOCK * S.BLOCK * 4, linear) < full_matrix // 8


@pytest.mark.parametrize("queries", [1, 300])
def test_kernel_reads_transposed_inputs_in_place(kernel_calls, queries):
    """Hugging Face hands the kernel (B, N, H, D) storage seen as (B, H, N, D): the same numbers
    as from contiguous copies, and no copy of the queries, keys or values is made (capture's
    per-call path, which runs the kernel for a decoding step's single query too)."""
    gen = torch.Generator().manual_seed(queries)
    n = 700
    q = torch.randn(2, queries, 4, 16, generator=gen).transpose(1, 2)  # (B, H, Q, D) view
    k = torch.randn(2, n, 2, 16, generator=gen).transpose(1, 2)
    v = torch.randn(2, n, 2, 8, generator=gen).transpose(1, 2)
    names, spans = S.check_stats(ALL, {"context": (3, 40)})

    def stats(*inputs):  # capture's per-call path: the kernel at every size
        return S.checked_stats(*inputs, None, None, True, None, names, spans, None)

    out = stats(q, k, v)
    expected = stats(*(x.contiguous() for x in (q, k, v)))
    assert len(kernel_calls) == 2
    assert torch.equal(out.output, expected.output)
    for name in expected.stats:
        assert torch.equal(out.stats[name], expected.stats[name]), name
    copies = _largest_allocation(lambda: stats(q, k, v))
    assert copies < k.numel() * 4  # below one (B, H, N, D) copy of the keys
