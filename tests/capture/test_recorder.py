"""capture() on attnkit modules, nn.MultiheadAttention and Hugging Face models."""

import pytest
import torch
from torch import nn

import attnkit
from attnkit import MultiHeadAttention
from attnkit.attention import backends
from attnkit.recording import attention_layers, stats_from_weights

STATS = ("entropy", "max", "argmax", "sink")


@pytest.fixture(
    autouse=True,
    params=[(256, True), (4, True), (4, False)],
    ids=["one-tile", "kernel", "tiled"],
)
def block(request, monkeypatch):
    """Run every test with short inputs as one tile, on the fused CPU kernel where it applies,
    and on the fallback path streamed over 4-key blocks."""
    from attnkit.recording import kernel, stats

    size, use_kernel = request.param
    monkeypatch.setattr(stats, "BLOCK", size)
    if not use_kernel:
        monkeypatch.setattr(kernel, "is_available", lambda device="cpu": False)
    return size


def _assert_stats_match(recording, layer, weights, spans=None, keep=None):
    """Every recorded statistic equals the one read off ``weights``, on queries ``keep``."""
    expected = stats_from_weights(weights, (*STATS, *(f"mass:{s}" for s in spans or {})), spans)
    for name, value in expected.items():
        got = recording.stats[name][layer]
        if keep is not None:
            got, value = got[keep.expand_as(got)], value[keep.expand_as(value)]
        torch.testing.assert_close(got.double(), value.double(), atol=1e-5, rtol=0, msg=name)


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = MultiHeadAttention(32, 4, num_kv_heads=2, causal=True, positions="rope")
        self.second = MultiHeadAttention(32, 4, causal=True)

    def forward(self, x):
        return self.second(x + self.first(x).output).output


def test_attnkit_modules_weights_stats_and_restoration():
    torch.manual_seed(0)
    model = TwoLayers().eval()
    x = torch.randn(2, 9, 32)
    expected = model(x)
    reference = model.first(x, need_weights=True).weights
    names_before = backends.available()
    with attnkit.capture(model, weights=True) as with_weights:
        torch.testing.assert_close(model(x), expected)
    with attnkit.capture(model, stats=STATS, spans={"start": (0, 3)}) as with_stats:
        torch.testing.assert_close(model(x), expected)
    assert with_weights.layers == ["first", "second"]
    torch.testing.assert_close(with_weights.weights["first"], reference)
    for layer in ("first", "second"):
        _assert_stats_match(with_stats, layer, with_weights.weights[layer], {"start": (0, 3)})
    assert model.first.backend == "auto" and backends.available() == names_before


def test_layers_heads_and_unknown_names():
    torch.manual_seed(0)
    model = TwoLayers().eval()
    x = torch.randn(1, 5, 32)
    with attnkit.capture(model, weights=True, layers=["second"], heads=[1, 3]) as rec:
        model(x)
    assert list(rec.weights) == ["second"]
    full = model.second(x + model.first(x).output, need_weights=True).weights
    torch.testing.assert_close(rec.weights["second"], full[:, [1, 3]])
    unknown = r"unknown layers \['third'\].*\['first', 'second'\]"
    with pytest.raises(ValueError, match=unknown), attnkit.capture(model, layers=["third"]):
        pass
    no_layers = "no supported attention layer"
    with pytest.raises(ValueError, match=no_layers), attnkit.capture(nn.Linear(2, 2)):
        pass


def test_nested_and_repeated_captures():
    torch.manual_seed(0)
    model = TwoLayers().eval()
    x = torch.randn(1, 6, 32)
    with attnkit.capture(model, stats=("entropy",)) as outer:
        with attnkit.capture(model, weights=True, layers=["first"]) as inner:
            model(x)
        model(x)
    assert inner.weights["first"].shape == (1, 4, 6, 6)
    assert outer.stats["entropy"]["first"].shape == (1, 4, 12)  # two calls joined
    for _ in range(2):
        with attnkit.capture(model, stats=("max",)) as again:
            model(x)
        assert again.stats["max"]["second"].shape == (1, 4, 6)
    assert model.first.backend == "auto"


def test_restored_after_an_exception():
    model = TwoLayers()
    with pytest.raises(RuntimeError, match="boom"), attnkit.capture(model, weights=True):
        raise RuntimeError("boom")
    assert model.first.backend == "auto" and model.second.backend == "auto"
    assert not [n for n in backends.available() if n.startswith("attnkit.capture.")]


def _torch_masks(batch, length, kind):
    gen = torch.Generator().manual_seed(1)
    if kind == "none":
        return {}
    if kind == "padding":
        pad = torch.zeros(batch, length, dtype=torch.bool)
        pad[1, -2:] = True
        return {"key_padding_mask": pad}
    if kind == "bool_attn":
        blocked = torch.rand(length, length, generator=gen) > 0.6
        blocked.fill_diagonal_(False)
        return {"attn_mask": blocked}
    if kind == "float_attn":
        return {"attn_mask": torch.randn(length, length, generator=gen)}
    if kind == "per_head":
        blocked = torch.rand(batch * 4, length, length, generator=gen) > 0.6
        blocked[:, :, 0] = False
        return {"attn_mask": blocked}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["none", "padding", "bool_attn", "float_attn", "per_head"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_multihead_attention(kind, batch_first):
    torch.manual_seed(0)
    module = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    x = torch.randn(2, 7, 32) if batch_first else torch.randn(7, 2, 32)
    masks = _torch_masks(2, 7, kind)
    expected, weights = module(x, x, x, average_attn_weights=False, **masks)
    with attnkit.capture(module, weights=True, stats=STATS) as rec:
        out, averaged = module(x, x, x, **masks)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(averaged, weights.mean(1))
    torch.testing.assert_close(rec.weights[""], weights)
    _assert_stats_match(rec, "", weights)
    assert "forward" not in module.__dict__


def test_transformer_encoder_fast_path_is_restored():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 7, 32)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, -2:] = True
    with torch.no_grad():
        expected = encoder(x, src_key_padding_mask=pad)
        with attnkit.capture(encoder, weights=True, stats=("entropy",)) as rec:
            got = encoder(x, src_key_padding_mask=pad)
    torch.testing.assert_close(got, expected)
    assert rec.layers == ["layers.0.self_attn", "layers.1.self_attn"]
    assert rec.weights["layers.1.self_attn"][1, :, :, -2:].eq(0).all()
    assert torch.backends.mha.get_fastpath_enabled()


def test_minilm_weights_and_stats_equal_eager(minilm):
    tokenizer, sdpa, eager = minilm
    batch = tokenizer(
        ["attention is all you need", "a longer second sentence, so the first one is padded"],
        return_tensors="pt",
        padding=True,
    )
    spans = {"first_words": (1, 4)}
    with torch.no_grad():
        reference = eager(**batch, output_attentions=True)
        plain = sdpa(**batch).last_hidden_state
        with attnkit.capture(sdpa, weights=True) as rec_weights:
            sdpa(**batch)
        with attnkit.capture(sdpa, stats=STATS, spans=spans) as rec_stats:
            captured = sdpa(**batch).last_hidden_state
    assert len(rec_stats.layers) == 6 == len(attention_layers(sdpa))
    # outputs unchanged up to float32 rounding over six layers
    torch.testing.assert_close(captured, plain, atol=5e-5, rtol=1e-5)
    for i, layer in enumerate(rec_weights.layers):
        assert rec_weights.weights[layer].shape == (2, 12, *batch["input_ids"].shape[1:] * 2)
        torch.testing.assert_close(rec_weights.weights[layer], reference.attentions[i])
        _assert_stats_match(rec_stats, layer, reference.attentions[i], spans)


def test_minilm_eager_model_keeps_output_attentions(minilm):
    tokenizer, _, eager = minilm
    batch = tokenizer(["hello world"], return_tensors="pt")
    with torch.no_grad():
        reference = eager(**batch, output_attentions=True)
        with attnkit.capture(eager, stats=("entropy",)) as rec:
            out = eager(**batch, output_attentions=True)
    torch.testing.assert_close(out.last_hidden_state, reference.last_hidden_state)
    torch.testing.assert_close(out.attentions[-1], reference.attentions[-1])
    assert rec.stats["entropy"][rec.layers[0]].shape == (1, 12, batch["input_ids"].shape[1])


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_decoder_weights_and_stats_equal_eager_with_left_padding(hf_models, family):
    sdpa, eager = hf_models[family]
    ids = torch.randint(3, 101, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    real = mask.bool()[:, None, :, None]  # padding queries see no key: compare real ones
    with torch.no_grad():
        reference = eager(input_ids=ids, attention_mask=mask, output_attentions=True)
        plain = sdpa(input_ids=ids, attention_mask=mask).logits
        with attnkit.capture(sdpa, weights=True) as rec_weights:
            sdpa(input_ids=ids, attention_mask=mask)
        with attnkit.capture(sdpa, stats=STATS, spans={"prompt": (0, 4)}) as rec_stats:
            logits = sdpa(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, plain)
    for i, layer in enumerate(rec_stats.layers):
        got, want = rec_weights.weights[layer], reference.attentions[i]
        torch.testing.assert_close(got[real.expand_as(got)], want[real.expand_as(want)])
        _assert_stats_match(rec_stats, layer, want, {"prompt": (0, 4)}, keep=real[..., 0])


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_generate_with_kv_cache_equals_one_full_forward(hf_models, family):
    sdpa, eager = hf_models[family]
    prompt = torch.randint(3, 101, (1, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), attnkit.capture(sdpa, stats=STATS) as rec:
        generated = sdpa.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5,
            do_sample=False,
        )  # fmt: skip
    seen = generated.shape[1] - 1  # the last token is produced, never fed back
    with torch.no_grad():
        full = eager(input_ids=generated[:, :seen], output_attentions=True)
    for i, layer in enumerate(rec.layers):
        assert rec.stats["entropy"][layer].shape == (1, 4, seen)
        _assert_stats_match(rec, layer, full.attentions[i])


def test_interface_is_untouched_and_config_restored(hf_models):
    from transformers.modeling_utils import AttentionInterface

    sdpa, eager = hf_models["llama"]
    before = dict(AttentionInterface._global_mapping)
    layers = [layer.self_attn for layer in sdpa.model.layers]
    own = [layer.config for layer in layers]
    with attnkit.capture(sdpa, stats=("entropy",), layers=["model.layers.1.self_attn"]):
        # only the captured layer names attnkit's dispatcher, through a config of its own; the
        # model's config, the other layer's and the shared entries are untouched
        assert layers[1].config._attn_implementation == "attnkit_capture_sdpa"
        assert layers[1].config.hidden_size == sdpa.config.hidden_size
        assert layers[0].config is own[0] and own[0]._attn_implementation == "sdpa"
        assert sdpa.config._attn_implementation == "sdpa"
        assert eager.config._attn_implementation == "eager"
        for name in ("sdpa", "eager", "flex_attention"):
            assert AttentionInterface._global_mapping.get(name) is before.get(name)
    assert [layer.config for layer in layers] == own and own[1]._attn_implementation == "sdpa"
    assert {k: v for k, v in AttentionInterface._global_mapping.items() if k in before} == before


def test_softcap_is_read_and_sinks_refused(hf_models):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from attnkit.recording.stats import capped_attention

    sdpa, _ = hf_models["llama"]
    layer = sdpa.model.layers[0].self_attn
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 4, 3, 16, generator=g), torch.randn(1, 2, 3, 16, generator=g)
    with attnkit.capture(sdpa, weights=True, layers=["model.layers.0.self_attn"]) as rec:
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(layer.config._attn_implementation, None)
        out, _ = attend(layer, q, k, k, None, softcap=0.5, is_causal=False)
        with pytest.raises(ValueError, match="s_aux"):
            attend(layer, q, k, k, None, s_aux=torch.zeros(4))
    expected = capped_attention(q, k, k, softcap=0.5, need_weights=True)
    torch.testing.assert_close(out, expected.output.transpose(1, 2))
    torch.testing.assert_close(rec.weights["model.layers.0.self_attn"], expected.weights)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_last_query_records_one_row_per_call(hf_models, family):
    sdpa, _ = hf_models[family]
    ids = torch.randint(3, 101, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with attnkit.capture(sdpa, stats=STATS, spans={"p": (0, 4)}) as full:
            expected = sdpa(input_ids=ids).logits
        with attnkit.capture(sdpa, stats=STATS, spans={"p": (0, 4)}, last_query=True) as last:
            logits = sdpa(input_ids=ids).logits
        with attnkit.capture(sdpa, weights=True, last_query=True) as last_weights:
            sdpa(input_ids=ids)
    torch.testing.assert_close(logits, expected)
    for layer in full.layers:
        for name in (*STATS, "mass:p"):
            torch.testing.assert_close(last.stats[name][layer], full.stats[name][layer][..., -1:])
        assert last_weights.weights[layer].shape == (1, 4, 1, 9)
    with (
        pytest.raises(ValueError, match="last_query"),
        attnkit.capture(sdpa, grad=True, last_query=True),
    ):
        pass


def _capture_pair(model, run, heads, **options):
    """What capture records with ``heads`` chosen, and the same heads read off a whole capture.
    With heads chosen the output comes from the fused kernel: bit for bit the plain output."""
    plain = run()
    with attnkit.capture(model, heads=heads, **options) as chosen:
        torch.testing.assert_close(run(), plain, atol=0, rtol=0)
    with attnkit.capture(model, **options) as whole:
        torch.testing.assert_close(run(), plain)
    return chosen, whole


CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("last_query", [False, True])
@pytest.mark.parametrize("heads", [[3], [0, 2], [3, 1]])
def test_chosen_heads_equal_the_whole_capture_on_grouped_attention(heads, last_query, device):
    # grouped (4 query heads share 2 key heads) and plain layers, weights and every statistic
    torch.manual_seed(1)
    model = TwoLayers().eval().to(device)
    x = torch.randn(2, 9, 32, device=device)
    spans = {"start": (0, 3)}
    options = {"weights": True, "stats": STATS, "spans": spans, "last_query": last_query}
    chosen, whole = _capture_pair(model, lambda: model(x), heads, **options)
    for layer in ("first", "second"):
        torch.testing.assert_close(chosen.weights[layer], whole.weights[layer][:, heads])
        for name in (*STATS, "mass:start"):
            got, want = chosen.stats[name][layer], whole.stats[name][layer][:, heads]
            torch.testing.assert_close(got.double(), want.double(), atol=1e-6, rtol=0)
    stats_only, whole_stats = _capture_pair(model, lambda: model(x), heads, stats=STATS)
    for name in STATS:
        got, want = stats_only.stats[name]["first"], whole_stats.stats[name]["first"][:, heads]
        torch.testing.assert_close(got.double(), want.double(), atol=1e-6, rtol=0)


def test_chosen_heads_on_torch_and_hf_layers_with_padding_and_grad():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(2, 6, 16)
    padding = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    run = lambda: mha(x, x, x, key_padding_mask=padding, need_weights=False)[0]  # noqa: E731
    chosen, whole = _capture_pair(mha, run, [2, 0], weights=True, stats=STATS)
    torch.testing.assert_close(chosen.weights[""], whole.weights[""][:, [2, 0]])
    config = transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa",
    )  # fmt: skip
    llama = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])  # left padding
    run = lambda: llama(input_ids=ids, attention_mask=mask).logits  # noqa: E731
    chosen, whole = _capture_pair(llama, run, [1, 2], weights=True, stats=STATS)
    for layer in whole.weights:
        torch.testing.assert_close(chosen.weights[layer], whole.weights[layer][:, [1, 2]])
        torch.testing.assert_close(
            chosen.stats["entropy"][layer], whole.stats["entropy"][layer][:, [1, 2]], atol=1e-6,
            rtol=0,
        )  # fmt: skip
    with attnkit.capture(llama, grad=True, heads=[3]) as rec:  # whole in the graph, chosen read
        llama(input_ids=ids, attention_mask=mask).logits.sum().backward()
    layer = next(iter(rec.weights))
    assert rec.weights[layer].shape[1] == 1 and rec.grads[layer].shape[1] == 1


def test_a_head_past_the_layer_is_refused():
    model = TwoLayers().eval()
    refused = r"heads must be below the layer's 4 heads, got \[4\]"
    with pytest.raises(ValueError, match=refused), attnkit.capture(model, heads=[4], stats=STATS):
        model(torch.randn(1, 3, 32))
