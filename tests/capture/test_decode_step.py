"""The per-call path of capture: one call of the CPU kernel, spans shared or per example."""

import pytest
import torch

from attnkit.attention.backends import math_attention
from attnkit.recording import kernel
from attnkit.recording import stats as S

ALL = ("entropy", "max", "argmax", "sink")


@pytest.fixture(autouse=True)
def needs_kernel():
    if not kernel.is_available():
        pytest.skip("attnkit's CPU statistics kernel could not be built here (no C++ compiler)")


def _inputs(q, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, h, hkv, d = 3, 4, 2, 16
    query = torch.randn(b, h, q, d, generator=gen)
    key = 3 * torch.randn(b, hkv, k, d, generator=gen)  # sharp attention
    value = torch.randn(b, hkv, k, 8, generator=gen)
    mask = torch.ones(b, 1, 1, k, dtype=torch.bool)
    mask[1, ..., :5] = False  # left padding of 5 and 2 keys
    mask[2, ..., :2] = False
    return (query, key, value), mask


@pytest.mark.parametrize("q,k", [(1, 40), (1, 700), (37, 211)])
@pytest.mark.parametrize("causal", [False, True])
def test_per_example_spans_in_one_kernel_call_equal_the_weights(monkeypatch, q, k, causal):
    calls = []
    original = kernel.flash_stats

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(kernel, "flash_stats", counted)
    inputs, mask = _inputs(q, k)
    starts, stops = torch.tensor([0, 5, 2]), torch.tensor([10, 30, 3])
    names, spans = S.check_stats(ALL, {"ctx": (starts, stops), "first": (starts, starts + 1)})
    out = S.checked_stats(*inputs, mask, None, causal, None, names, spans, None)
    assert len(calls) == 1 and calls[0]["example_spans"].shape == (2 + 1, 3, 2)  # and the sink
    reference = math_attention(*inputs, mask=mask, causal=causal, need_weights=True)
    torch.testing.assert_close(out.output, reference.output, atol=1e-5, rtol=0)
    for b in range(3):
        lo, hi = int(starts[b]), int(stops[b])
        w = reference.weights[b]  # (H, Q, K)
        torch.testing.assert_close(
            out.stats["mass:ctx"][b], w[..., lo:hi].sum(-1), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(out.stats["mass:first"][b], w[..., lo], atol=1e-5, rtol=0)
        expected = S.stats_from_weights(w[None], ALL)
        for name in ("entropy", "max", "sink"):
            got = out.stats[name][b : b + 1]
            torch.testing.assert_close(got, expected[name], atol=1e-5, rtol=0, msg=name)
        assert torch.equal(out.stats["argmax"][b : b + 1], expected["argmax"])


def test_shared_spans_of_one_query_equal_the_weights():
    inputs, mask = _inputs(1, 300, seed=1)
    names, spans = S.check_stats(ALL, {"ctx": (3, 40), "tail": (60, 300)})
    out = S.checked_stats(*inputs, mask, None, False, 0.3, names, spans, None)
    reference = math_attention(*inputs, mask=mask, scale=0.3, need_weights=True)
    expected = S.stats_from_weights(reference.weights, names, spans)
    torch.testing.assert_close(out.output, reference.output, atol=1e-5, rtol=0)
    for name in names:
        if name == "argmax":
            assert torch.equal(out.stats[name], expected[name])
        else:
            torch.testing.assert_close(out.stats[name], expected[name], atol=1e-5, rtol=0)


def test_per_example_spans_of_another_batch_size_are_refused():
    inputs, mask = _inputs(1, 20)
    names, spans = S.check_stats(ALL, {"ctx": (torch.tensor([0, 1]), torch.tensor([2, 3]))})
    with pytest.raises(ValueError, match="2 per-example ranges for a batch of 3"):
        S.checked_stats(*inputs, mask, None, False, None, names, spans, None)
