"""Per-example spans (left-padded batches) and last-query weights from the fused path."""

import pytest
import torch

import attnkit
from attnkit.attention.backends import math_attention
from attnkit.recording import stats as S

ALL = ("entropy", "max", "argmax", "sink")


def _inputs(q, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, h, hkv, d = 3, 4, 2, 8
    query = torch.randn(b, h, q, d, generator=gen, dtype=torch.float64)
    key = torch.randn(b, hkv, k, d, generator=gen, dtype=torch.float64)
    value = torch.randn(b, hkv, k, d, generator=gen, dtype=torch.float64)
    mask = torch.ones(b, 1, q, k, dtype=torch.bool)
    mask[1, ..., :5] = False  # left padding of 5 and 2 keys
    mask[2, ..., :2] = False
    return (query, key, value), mask


@pytest.mark.parametrize("q,k", [(1, 40), (300, 300)], ids=["one_tile", "tiled"])
def test_per_example_spans_equal_each_example_alone(q, k):
    inputs, mask = _inputs(q, k)
    starts, stops = torch.tensor([0, 5, 2]), torch.tensor([10, 30, 3])
    spans = {"ctx": (starts, stops), "all": (0, k)}
    out = S.attention_stats(*inputs, mask=mask, causal=True, stats=ALL, spans=spans)
    weights = math_attention(*inputs, mask=mask, causal=True, need_weights=True).weights
    torch.testing.assert_close(out.output, math_attention(*inputs, mask=mask, causal=True).output)
    for b in range(3):
        lo, hi = int(starts[b]), int(stops[b])
        expected = weights[b, :, :, lo:hi].sum(-1)
        torch.testing.assert_close(out.stats["mass:ctx"][b], expected)
        torch.testing.assert_close(out.stats["mass:all"][b], weights[b].sum(-1))
        reference = S.stats_from_weights(weights[b : b + 1], ALL, {"ctx": (lo, hi)})
        for name in ALL:
            torch.testing.assert_close(out.stats[name][b : b + 1], reference[name])
    from_weights = S.stats_from_weights(weights, ["mass:ctx"], {"ctx": (starts, stops)})
    torch.testing.assert_close(from_weights["mass:ctx"], out.stats["mass:ctx"])


def test_bad_per_example_spans():
    inputs, _ = _inputs(1, 20)
    for span in [
        (torch.tensor([0, 3]), torch.tensor([2])),  # lengths differ
        (torch.tensor([0, 3, 1]), torch.tensor([2, 3, 4])),  # empty range
        (torch.tensor([0.0, 1.0, 1.0]), torch.tensor([2.0, 3.0, 4.0])),  # not integers
        (torch.tensor([-1, 0, 0]), torch.tensor([2, 3, 4])),  # negative
    ]:
        with pytest.raises(ValueError, match=r"spans\['ctx'\] must be"):
            S.attention_stats(*inputs, spans={"ctx": span})
    two = (torch.tensor([0, 1]), torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="2 per-example ranges for a batch of 3"):
        S.attention_stats(*inputs, spans={"ctx": two})
    with pytest.raises(ValueError, match="2 per-example ranges for a batch of 3"):
        big, _ = _inputs(300, 300)
        S.attention_stats(*big, spans={"ctx": two})


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_left_padded_batch_equals_each_sequence_alone(hf_models, family):
    """Per-example spans and sink on a left-padded batch; last-query weights from sdpa."""
    sdpa, eager = hf_models[family]
    gen = torch.Generator().manual_seed(3)
    lengths = [9, 4, 6]
    rows = [torch.randint(3, 101, (n,), generator=gen) for n in lengths]
    width = max(lengths)
    pads = torch.tensor([width - n for n in lengths])
    ids = torch.stack(
        [torch.cat([torch.zeros(p, dtype=torch.long), r]) for p, r in zip(pads, rows, strict=True)]
    )
    attention = (torch.arange(width)[None] >= pads[:, None]).long()
    positions = (attention.cumsum(-1) - 1).clamp_min(0)
    spans = {"ctx": (pads + 1, pads + 3), "first": (pads, pads + 1)}
    with torch.no_grad():
        with attnkit.capture(
            sdpa, stats=("entropy",), spans=spans, weights=True, last_query=True
        ) as batch:
            sdpa(input_ids=ids, attention_mask=attention, position_ids=positions)
        for b, row in enumerate(rows):
            alone = eager(input_ids=row[None], output_attentions=True).attentions
            for layer, name in enumerate(batch.layers):
                w = alone[layer][0, :, -1]  # (H, K): the last query's weights
                got = {k: v[name][b, :, 0] for k, v in batch.stats.items()}
                torch.testing.assert_close(got["mass:ctx"], w[:, 1:3].sum(-1), atol=1e-5, rtol=0)
                torch.testing.assert_close(got["mass:first"], w[:, 0], atol=1e-5, rtol=0)
                entropy = -(w * w.clamp_min(1e-45).log()).sum(-1)
                torch.testing.assert_close(got["entropy"], entropy, atol=1e-5, rtol=0)
                recorded = batch.weights[name]
                assert recorded.shape == (3, 4, 1, width)
                torch.testing.assert_close(recorded[b, :, 0, pads[b] :], w, atol=1e-5, rtol=0)
                assert not recorded[b, :, 0, : pads[b]].any()  # no weight on padding
