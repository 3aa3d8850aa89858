"""Capture through a quantized KV cache (transformers' ``QuantizedCache``, quanto, on the CPU).

Keys and values are stored in 4 bits once the cache holds more than its residual length, so the
attention differs from a full-precision run: the reference is eager ``output_attentions`` through
the same kind of cache. The offloaded caches need CUDA in transformers and are not run here.
"""

import pytest
import torch

pytest.importorskip("optimum.quanto")
transformers = pytest.importorskip("transformers")

from test_zoo import _models  # noqa: E402
from zoo import ARCHS, VOCAB  # noqa: E402

import attnkit  # noqa: E402

LLAMA = next(a for a in ARCHS if a.name == "llama")


def _cache(model):
    return transformers.QuantizedCache(
        "quanto", model.config, nbits=4, q_group_size=8, residual_length=4
    )


@pytest.mark.slow
def test_quantized_cache_weights_and_tokens_equal_eager():
    sdpa, eager = _models(LLAMA)
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :2] = 0  # left padding
    options = dict(max_new_tokens=9, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        plain = sdpa.generate(
            input_ids=ids, attention_mask=mask, past_key_values=_cache(sdpa), **options
        )
        with attnkit.capture(sdpa, weights=True, stats=("entropy", "max")) as rec:
            captured = sdpa.generate(
                input_ids=ids, attention_mask=mask, past_key_values=_cache(sdpa), **options
            )
        reference = eager.generate(
            input_ids=ids,
            attention_mask=mask,
            past_key_values=_cache(eager),
            output_attentions=True,
            return_dict_in_generate=True,
            **options,
        )
    assert torch.equal(captured, plain), "capture changed the tokens generated through the cache"
    assert torch.equal(captured, reference.sequences)
    for index, layer in enumerate(rec.layers):
        weights = rec.weights[layer]  # (B, H, 7 + 8, 15): every call's queries, absolute keys
        row = 0
        for step in reference.attentions:  # per call: (B, H, queries, keys so far)
            expected = step[index]
            queries, keys = expected.shape[-2:]
            got = weights[..., row : row + queries, :]
            real = torch.ones(2, queries, dtype=torch.bool)
            if row == 0:
                real = mask.bool()  # padded query rows: capture gives zeros, eager a uniform row
            diff = (got[..., :keys] - expected).abs().amax(dim=(1, -1))  # (B, queries)
            assert diff[real].max() < 1e-5, f"{layer}, call at row {row}"
            assert not got[..., keys:].any()  # keys not yet written are never attended
            row += queries
        assert row == weights.shape[-2]
