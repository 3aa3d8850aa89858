"""Conformance zoo: capture() on twenty Hugging Face architectures against eager.

Every architecture of :mod:`zoo` is built from a tiny config with random weights. Each cell runs
the sdpa model inside ``attnkit.capture`` and checks, against the same weights run with
``attn_implementation="eager"`` (the weights its attention layers return, which are what
``output_attentions`` holds):

- forward with the second example padded on the left and on the right: weights (<= 1e-5),
  streamed statistics (<= 1e-4), the model's output unchanged (<= 1e-5 on real tokens), the
  model's configs restored after the block;
- greedy generation of a left-padded batch with a dynamic and a static cache (decoder-only and
  encoder-decoder models): the same tokens as without capture, and every recorded row of weights
  and statistics equal to eager's over the final sequence, sliding-window layers included;
- the same generation inside ``capture(deferred=True)`` (as ``attnkit.llm.generate`` opens it):
  the same tokens and statistics as recording each step as it runs, with decoding steps waiting
  wherever a layer's cache grows by concatenation or its source is reused.

An architecture the installed transformers lacks is skipped with its name.
"""

from __future__ import annotations

import pytest
import torch
from zoo import ARCHS, VOCAB, build, inputs

import attnkit
from attnkit.recording import attention_layers, stats_from_weights

transformers = pytest.importorskip("transformers")

STATS = ("entropy", "max", "argmax", "sink")
SPANS = {"head": (1, 4)}
_MODELS: dict[str, tuple] = {}


def _models(arch):
    if arch.name not in _MODELS:
        _MODELS[arch.name] = build(arch)
    if _MODELS[arch.name] is None:
        pytest.skip(f"{arch.name}: transformers {transformers.__version__} lacks {arch.model}")
    return _MODELS[arch.name]


def _eager_weights(model, layers, **batch) -> dict[str, torch.Tensor]:
    """The weights each eager attention layer returns, by layer name, in call order joined."""
    modules = dict(model.named_modules())
    seen: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name in layers:

        def hook(module, args, output, name=name):
            found = [x for x in output if isinstance(x, torch.Tensor) and x.dim() == 4]
            seen.setdefault(name, []).append(found[-1])

        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(**batch, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(chunks, dim=-2) for name, chunks in seen.items()}


def _implementations(model):
    return [
        (name, m.config._attn_implementation)
        for name, m in model.named_modules()
        if getattr(m, "config", None) is not None and hasattr(m.config, "_attn_implementation")
    ]


def _main(output):
    for name in ("logits", "last_hidden_state", "logits_per_image"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise AssertionError("no output to compare")


def _compare(rec, reference, real, text_length):
    """Recorded weights and statistics equal eager's on the real queries."""
    for layer, expected in reference.items():
        got = rec.weights[layer]
        assert got.shape == expected.shape, (layer, got.shape, expected.shape)
        rows = torch.ones(expected.shape[0], expected.shape[2], dtype=torch.bool)
        if real is not None and expected.shape[2] == text_length:
            rows = real[:, : expected.shape[2]]
        keep = rows[:, None, :, None].expand_as(expected)
        torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=0, msg=layer)
        wanted = stats_from_weights(expected, (*STATS, "mass:head"), SPANS)
        for name, value in wanted.items():
            mine = rec.stats[name][layer]
            keep_q = rows[:, None, :].expand_as(value)
            if name == "argmax":  # ties aside, the same key
                top = expected.gather(-1, mine.unsqueeze(-1)).squeeze(-1)
                torch.testing.assert_close(top[keep_q], expected.amax(-1)[keep_q], atol=1e-5,
                                           rtol=0, msg=f"{layer} argmax")  # fmt: skip
                continue
            torch.testing.assert_close(
                mine[keep_q].double(), value[keep_q].double(), atol=1e-4, rtol=0,
                msg=f"{layer} {name}",
            )  # fmt: skip


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch", ARCHS, ids=[a.name for a in ARCHS])
def test_forward_equals_eager(arch, side):
    if arch.kind in ("vision", "speech") and side == "right":
        pytest.skip(f"{arch.name}: no padding in {arch.kind} inputs")
    sdpa, eager = _models(arch)
    batch, real = inputs(arch, side)
    layers = attention_layers(sdpa)
    assert layers, arch.name
    before = _implementations(sdpa)
    with torch.no_grad():
        plain = _main(sdpa(**batch))
        with attnkit.capture(sdpa, weights=True, stats=STATS, spans=SPANS) as rec:
            captured = _main(sdpa(**batch))
    assert _implementations(sdpa) == before
    assert all("forward" not in m.__dict__ for m in sdpa.modules())
    if real is not None and real.dim() == 2 and plain.shape[:2] == real.shape:
        plain, captured = plain[real], captured[real]
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=0)
    reference = _eager_weights(eager, layers, **batch)
    assert set(reference) == set(layers)
    text = batch["input_ids"].shape[1] if "input_ids" in batch else -1
    _compare(rec, reference, real if real is not None and real.dim() == 2 else None, text)


def _generation(seed: int, cache: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(ids, mask, generate options)``: two prompts of 7 tokens, the second left-padded by 2,
    greedy for 9 new tokens with a ``cache`` ("dynamic" or "static") cache."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :2] = 0
    ids = ids.masked_fill(mask == 0, 0)
    options = dict(max_new_tokens=9, do_sample=False, pad_token_id=0, eos_token_id=None)
    if cache == "static":
        options["cache_implementation"] = "static"
    return ids, mask, options


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize(
    "arch",
    [a for a in ARCHS if a.kind in ("decoder", "seq2seq")],
    ids=[a.name for a in ARCHS if a.kind in ("decoder", "seq2seq")],
)
def test_generate_equals_eager(arch, cache):
    sdpa, eager = _models(arch)
    ids, mask, options = _generation(3, cache)
    layers = attention_layers(sdpa)
    with torch.no_grad():
        try:
            plain = sdpa.generate(input_ids=ids, attention_mask=mask, **options)
        except Exception as error:  # transformers' own limit, not capture's: say which
            pytest.skip(f"{arch.name}: transformers cannot generate with a {cache} cache: {error}")
        with attnkit.capture(sdpa, weights=True, stats=STATS, spans=SPANS) as rec:
            generated = sdpa.generate(input_ids=ids, attention_mask=mask, **options)
    assert torch.equal(generated, plain), f"{arch.name}: capture changed the generated tokens"
    if arch.kind == "seq2seq":
        batch = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": generated[:, :-1]}
        real = None
    else:
        full_mask = torch.cat([mask, torch.ones(2, generated.shape[1] - 7, dtype=torch.long)], 1)
        batch = {"input_ids": generated[:, :-1], "attention_mask": full_mask[:, :-1]}
        # the positions generate() gives a left-padded batch (absolute embeddings: GPT-2)
        batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        real = full_mask[:, :-1].bool()
    reference = _eager_weights(eager, layers, **batch)
    _compare(rec, reference, real, batch["input_ids"].shape[1])


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize(
    "arch",
    [a for a in ARCHS if a.kind in ("decoder", "seq2seq")],
    ids=[a.name for a in ARCHS if a.kind in ("decoder", "seq2seq")],
)
def test_deferred_generation_equals_step_by_step(arch, cache, flushes):
    """capture(deferred=True), as attnkit.llm.generate opens it: the same tokens and the same
    statistics as recording each decoding step as it runs, on every architecture family."""
    sdpa, _ = _models(arch)
    ids, mask, options = _generation(5, cache)
    recorded = {}
    with torch.no_grad():
        try:
            plain = sdpa.generate(input_ids=ids, attention_mask=mask, **options)
        except Exception as error:  # transformers' own limit, not capture's: say which
            pytest.skip(f"{arch.name}: transformers cannot generate with a {cache} cache: {error}")
        for later in (True, False):
            with attnkit.capture(
                sdpa, stats=STATS, spans=SPANS, last_query=True, deferred=later
            ) as rec:
                generated = sdpa.generate(input_ids=ids, attention_mask=mask, **options)
            assert torch.equal(generated, plain), f"{arch.name}: capture changed the tokens"
            recorded[later] = rec.stats
    assert recorded[True].keys() == recorded[False].keys()
    for name, by_layer in recorded[False].items():
        for layer, expected in by_layer.items():
            got = recorded[True][name][layer]
            if name == "argmax":
                assert torch.equal(got, expected), (arch.name, name, layer)
            else:
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=(name, layer))
    config = sdpa.config
    every_layer_slides = getattr(config, "sliding_window", None) and "full_attention" not in (
        getattr(config, "layer_types", None) or []
    )
    # eager layers return their weights (Gemma 2 has no sdpa): they record step by step
    sdpa_layers = config._attn_implementation == "sdpa"
    if cache == "dynamic" and sdpa_layers and not every_layer_slides:
        assert flushes, f"{arch.name}: no decoding step waited over a growing cache"
