"""capture(deferred=True): cross-attention decoding steps over a cached source wait and get
their statistics in one kernel call per layer, with the numbers of the step-by-step path."""

import pytest
import torch

import attnkit

transformers = pytest.importorskip("transformers")

STATS = ("entropy", "max", "argmax", "sink")
SOURCE = torch.randint(3, 60, (2, 12), generator=torch.Generator().manual_seed(0))


def _model(name):
    torch.manual_seed(0)
    common = dict(vocab_size=64, pad_token_id=0, eos_token_id=None, bos_token_id=None)
    if name == "t5":
        config = transformers.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                       decoder_start_token_id=0, **common)  # fmt: skip
        model = transformers.T5ForConditionalGeneration(config)
    else:
        config = transformers.BartConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
            max_position_embeddings=64, decoder_start_token_id=2, forced_eos_token_id=None,
            **common,
        )  # fmt: skip
        model = transformers.BartForConditionalGeneration(config)
    model.config._attn_implementation = "sdpa"
    return model.eval()


def _cross(model):
    names = ("encoder_attn", "EncDecAttention")
    return [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] in names]


def _record(model, deferred_, spans, **generate):
    options = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, **generate)
    source = SOURCE.to(model.device)
    mask = (source != 0).long()
    with (
        torch.no_grad(),
        attnkit.capture(model, stats=STATS, spans=spans, layers=_cross(model),
                        last_query=True, deferred=deferred_) as rec,
    ):  # fmt: skip
        out = model.generate(input_ids=source, attention_mask=mask, **options)
    return out, rec.stats


def _assert_equal_stats(got, expected):
    assert got.keys() == expected.keys()
    for name, by_layer in expected.items():
        assert got[name].keys() == by_layer.keys()
        for layer, value in by_layer.items():
            if name == "argmax":
                assert torch.equal(got[name][layer], value), (name, layer)
            else:
                torch.testing.assert_close(got[name][layer], value, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["bart", "t5"])
@pytest.mark.parametrize("per_example", [False, True])
def test_deferred_steps_equal_the_step_by_step_path(name, per_example, flushes):
    model = _model(name)
    spans = {"context": (torch.tensor([0, 3]), torch.tensor([5, 9]))} if per_example else {
        "context": (2, 7)
    }  # fmt: skip
    out, stats = _record(model, True, spans)
    waited = list(flushes)
    reference_out, reference = _record(model, False, spans)
    assert torch.equal(out, reference_out)
    _assert_equal_stats(stats, reference)
    # each cross layer's steps after the first (which writes the cache) waited together
    layers = len(_cross(model))
    assert waited == [5] * layers
    assert stats["entropy"][_cross(model)[0]].shape == (2, 4, 6)


def test_beam_search_reorders_flush_the_rows_first(flushes):
    model = _model("bart")
    out, stats = _record(model, True, {"context": (2, 7)}, num_beams=3)
    waited = list(flushes)
    reference_out, reference = _record(model, False, {"context": (2, 7)}, num_beams=3)
    assert torch.equal(out, reference_out)
    _assert_equal_stats(stats, reference)
    assert sum(waited) == 5 * len(_cross(model))  # every step's rows, in several groups


def test_stats_read_inside_the_block_then_more_steps():
    model = _model("bart")
    options = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    layers = _cross(model)
    results = {}
    for deferred_ in (True, False):
        with torch.no_grad(), attnkit.capture(model, stats=STATS, layers=layers, last_query=True,
                                              deferred=deferred_) as rec:  # fmt: skip
            model.generate(input_ids=SOURCE, **options)
            halfway = rec.stats["entropy"][layers[0]].clone()
            model.generate(input_ids=SOURCE.flip(0), **options)
        results[deferred_] = (halfway, rec.stats)
    torch.testing.assert_close(results[True][0], results[False][0], atol=1e-5, rtol=0)
    assert results[True][0].shape[-1] == 4
    _assert_equal_stats(results[True][1], results[False][1])
    assert results[True][1]["entropy"][layers[0]].shape[-1] == 8


def test_keys_changed_in_place_while_rows_wait_are_an_error():
    model = _model("bart")
    layers = _cross(model)
    with torch.no_grad(), attnkit.capture(model, stats=STATS, layers=layers, last_query=True,
                                          deferred=True) as rec:  # fmt: skip
        model.generate(input_ids=SOURCE, max_new_tokens=3, do_sample=False)
        waiting = rec._waiting[layers[0]]
        waiting.key.add_(1.0)  # as a static cache's reset() would, before the rows were read
        with pytest.raises(RuntimeError, match="changed in place"):
            rec.stats  # noqa: B018 - reading computes the waiting rows
        rec._waiting.clear()


def test_deferred_needs_last_query():
    model = _model("bart")
    with pytest.raises(ValueError, match="last_query=True"), attnkit.capture(model, deferred=True):
        pass


def _decoder(name):
    torch.manual_seed(0)
    common = dict(vocab_size=64, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    if name == "gpt2":
        config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = getattr(transformers, f"{name.capitalize()}Config")(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, **common,
            **({"sliding_window": 5} if name == "mistral" else {}),
        )  # fmt: skip
        model = getattr(transformers, f"{name.capitalize()}ForCausalLM")(config)
    model.config._attn_implementation = "sdpa"
    return model.eval()


PROMPT = torch.randint(3, 60, (2, 9), generator=torch.Generator().manual_seed(1))
PROMPT[1, :3] = 0  # left padding of three


def _record_decoder(model, deferred_, **generate):
    spans = {"context": (torch.tensor([0, 3]), torch.tensor([4, 6])), "first": (0, 1)}
    if generate.get("num_beams", 1) > 1:  # beams multiply the batch: one range for all
        spans = {"context": (3, 6), "first": (0, 1)}
    options = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    with (
        torch.no_grad(),
        attnkit.capture(model, stats=STATS, spans=spans, last_query=True,
                        deferred=deferred_) as rec,
    ):  # fmt: skip
        prompt = PROMPT.to(model.device)
        out = model.generate(
            input_ids=prompt, attention_mask=(prompt != 0).long(), **options, **generate
        )
    return out, rec.stats


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_growing_cache_steps_equal_the_step_by_step_path(name, flushes):
    model = _decoder(name)
    out, stats = _record_decoder(model, True)
    waited = list(flushes)
    reference_out, reference = _record_decoder(model, False)
    assert torch.equal(out, reference_out)
    _assert_equal_stats(stats, reference)
    # the prompt's call is recorded at once, then the five decoding steps wait together
    assert waited == [5] * len(stats["entropy"])
    assert next(iter(stats["entropy"].values())).shape == (2, 4, 6)


@pytest.mark.parametrize(
    "name, generate",
    [("mistral", {}), ("llama", {"cache_implementation": "static"}), ("llama", {"num_beams": 2})],
    ids=["sliding_window", "static_cache", "beam_search"],
)
def test_caches_that_do_not_grow_in_place_record_step_by_step(name, generate, flushes):
    model = _decoder(name)
    out, stats = _record_decoder(model, True, **generate)
    waited = list(flushes)
    reference_out, reference = _record_decoder(model, False, **generate)
    assert torch.equal(out, reference_out)
    _assert_equal_stats(stats, reference)
    if name == "mistral" or "cache_implementation" in generate:
        assert waited == []  # a window that slides, a static buffer: nothing waits
    else:
        assert sum(waited) == 5 * len(stats["entropy"])  # reordered beams: several groups


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (by hand)")
@pytest.mark.parametrize("name", ["llama", "bart"])
def test_deferred_on_cuda_equals_step_by_step(name, flushes):
    """On a GPU: each step on SDPA, the statistics of the waiting rows at once, CUDA tensors
    throughout (the GPU statistics path, the Triton kernel beyond one tile)."""
    model = (_decoder(name) if name == "llama" else _model(name)).cuda()
    if name == "llama":
        out, stats = _record_decoder(model, True)
        waited = list(flushes)
        reference_out, reference = _record_decoder(model, False)
    else:
        out, stats = _record(model, True, {"context": (2, 7)})
        waited = list(flushes)
        reference_out, reference = _record(model, False, {"context": (2, 7)})
    assert torch.equal(out, reference_out)
    _assert_equal_stats(stats, reference)
    assert waited and all(size == 5 for size in waited)
