"""The Triton statistics kernel on a CUDA device against eager attention (run by hand on a GPU:
``bash benchmarks/gpu_check.sh``; CI has none).

The truth is float64 attention over the same rounded inputs. The rule is flash-attn's: the
kernel's error against the truth is at most twice the error of eager attention run in the same
dtype (scores, softcap and ``P·V`` in the dtype, softmax in float32 rounded to it, as Hugging
Face's eager attention does), for the output and for every statistic read off eager's weights;
in float32 never less than 1e-5 (eager's float32 error is ~1e-7, the kernel's exponentials are
the GPU's 2^x approximation; a softcapped score carries ``c·1e-7`` either way).
"""

import math

import pytest
import torch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (run by hand on a GPU machine)"
)

SPANS = [(3, 40), (60, 10_000), (0, 1)]  # the last one is the sink


def _attention(q, k, v, mask, causal, scale, softcap, dtype):
    """Eager attention computed in ``dtype``: ``(output, weights)``; no key: zeros."""
    q, k, v = (x.to(dtype) for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = (q @ k.transpose(-1, -2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    num_queries, num_keys = q.shape[-2], k.shape[-2]
    allowed = torch.ones(num_queries, num_keys, dtype=torch.bool, device=q.device)
    if causal:
        positions = torch.arange(num_keys - num_queries, num_keys, device=q.device)
        allowed = torch.arange(num_keys, device=q.device)[None, :] <= positions[:, None]
    allowed = allowed.expand(scores.shape)
    if mask is not None:
        allowed = allowed & mask
    scores = scores.masked_fill(~allowed, -math.inf)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    weights = torch.softmax(scores.to(work), -1).nan_to_num(0.0).to(dtype)
    return weights @ v, weights


def _statistics(weights, spans):
    w = weights.double()
    stats = {
        "entropy": -(w * w.clamp_min(1e-300).log()).sum(-1),
        "max": w.amax(-1),
    }
    for i, (lo, hi) in enumerate(spans):
        stats[f"mass{i}"] = w[..., lo:hi].sum(-1)
    return stats


def _kernel(q, k, v, mask, causal, scale, spans, softcap):
    from attnkit.recording import triton_stats

    out, lse, entropy, best, index, masses = triton_stats.flash_stats(
        q, k, v, mask, causal, scale, spans, True, softcap=softcap
    )
    stats = {"entropy": entropy, "max": torch.exp(best - lse)}
    for i in range(len(spans)):
        stats[f"mass{i}"] = masses[i]
    return out, stats, index, lse


def _inputs(dtype, shape, head_dim, value_dim, heads, kv_heads, masked, sharp, seed):
    gen = torch.Generator().manual_seed(seed)
    num_queries, num_keys = shape
    q = torch.randn(2, heads, num_queries, head_dim, generator=gen)
    k = sharp * torch.randn(2, kv_heads, num_keys, head_dim, generator=gen)
    v = torch.randn(2, kv_heads, num_keys, value_dim, generator=gen)
    mask = None
    if masked:
        mask = torch.rand(2, 1, 1, num_keys, generator=gen) > 0.3
        mask[1, 0, 0, : num_keys - num_queries + 1] = False  # early queries with no key
        mask = mask.cuda()
    return [x.cuda().to(dtype) for x in (q, k, v)], mask


def _check(dtype, shape, head_dim=64, value_dim=None, heads=4, kv_heads=2, causal=True,
           masked=False, softcap=None, sharp=2.0, seed=0):  # fmt: skip
    value_dim = value_dim or head_dim
    (q, k, v), mask = _inputs(dtype, shape, head_dim, value_dim, heads, kv_heads, masked, sharp,
                              seed)  # fmt: skip
    scale = head_dim**-0.5
    spans = [(lo, min(hi, shape[1])) for lo, hi in SPANS]
    out, stats, index, lse = _kernel(q, k, v, mask, causal, scale, spans, softcap)
    true_out, true_weights = _attention(q, k, v, mask, causal, scale, softcap, torch.float64)
    true_stats = _statistics(true_weights, spans)
    has_key = true_weights.sum(-1) > 0
    true_lse = _lse(q, k, mask, causal, scale, softcap)
    # flash-attn's rule: at most twice eager's own error in this dtype (float32: at least 1e-5)
    eager_out, eager_weights = _attention(q, k, v, mask, causal, scale, softcap, dtype)
    eager_stats = _statistics(eager_weights, spans)
    floor = 1e-5 if dtype == torch.float32 else 1e-6
    tolerances = {"out": max(floor, 2 * (eager_out.double() - true_out).abs().max().item())}
    for name, value in true_stats.items():
        tolerances[name] = max(floor, 2 * (eager_stats[name] - value).abs().max().item())
    errors = {"out": (out.double() - true_out).abs().max().item()}
    for name, value in true_stats.items():
        errors[name] = (stats[name].double() - value).abs().max().item()
    for name, error in errors.items():
        assert error <= tolerances[name], f"{name}: error {error:.3g} > {tolerances[name]:.3g}"
    # lse (float32 from the same rounded inputs): finite where a key is allowed, inf elsewhere
    assert torch.equal(lse.isinf(), ~has_key)
    torch.testing.assert_close(lse[has_key].double(), true_lse[has_key], atol=2e-5, rtol=1e-5)
    # the key named holds the largest weight, ties aside
    held = true_weights.gather(-1, index.unsqueeze(-1)).squeeze(-1).double()
    assert (true_stats["max"] - held).max().item() <= tolerances["max"] + 1e-6
    return errors, tolerances


def _lse(q, k, mask, causal, scale, softcap):
    q, k = q.double(), k.double()
    k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
    scores = (q @ k.transpose(-1, -2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    num_queries, num_keys = q.shape[-2], k.shape[-2]
    if causal:
        positions = torch.arange(num_keys - num_queries, num_keys, device=q.device)
        future = torch.arange(num_keys, device=q.device)[None, :] > positions[:, None]
        scores = scores.masked_fill(future, -math.inf)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    return torch.logsumexp(scores, -1)


CASES = {
    "causal_gqa_d64": {"shape": (300, 700)},
    "causal_square_d128": {"shape": (1000, 1000), "head_dim": 128, "heads": 8, "kv_heads": 8},
    "full_masked": {"shape": (300, 700), "causal": False, "masked": True},
    "causal_masked_narrow_values": {"shape": (211, 600), "masked": True, "value_dim": 48},
    "one_query": {"shape": (1, 600)},
    "softcap": {"shape": (300, 700), "softcap": 30.0, "sharp": 8.0},
    "softcap_masked_d128": {"shape": (257, 513), "softcap": 20.0, "sharp": 8.0,
                            "masked": True, "head_dim": 128},
}  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_matches_eager(dtype, case):
    _check(dtype, **CASES[case])


@pytest.mark.parametrize("case", ["causal_gqa_d64", "softcap"])
def test_kernel_matches_eager_fp16(case):
    _check(torch.float16, **CASES[case])


@pytest.mark.slow
@pytest.mark.parametrize("head_dim", [64, 128])
def test_every_tuning_candidate_is_exact(monkeypatch, head_dim):
    """Each block configuration the autotuner may pick gives the same, exact numbers."""
    from attnkit.recording import triton_stats

    monkeypatch.setattr(triton_stats, "TUNE_FROM", 1 << 40)  # the fixed configuration always
    for dtype, candidates in (
        (torch.bfloat16, triton_stats._CANDIDATES),
        (torch.float32, triton_stats._CANDIDATES_FP32),
    ):
        for candidate in candidates:
            monkeypatch.setitem(triton_stats._FIXED, dtype != torch.float32, candidate)
            errors, tolerances = _check(dtype, (777, 1111), head_dim=head_dim)
            assert all(errors[n] <= tolerances[n] for n in errors), (dtype, candidate)


@pytest.mark.slow
def test_autotuned_path_is_exact():
    """Long enough for the autotuner (the benchmark's lengths go through it)."""
    _check(torch.bfloat16, (2048, 2048), heads=8, kv_heads=2)


def test_softcap_is_validated():
    from attnkit.recording import triton_stats

    q = torch.randn(1, 1, 4, 16, device="cuda")
    with pytest.raises(ValueError, match="softcap"):
        triton_stats.flash_stats(q, q, q, None, True, 0.25, [], False, softcap=-1.0)
