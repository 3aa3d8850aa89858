"""One token text everywhere: token_texts by hand, with BPE tokenizers built offline, and the
dashboard's per-token trace against the eval report's rows for the same answers."""

import pytest
import torch

from attnkit.llm.tokens import token_texts

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CORPUS = [
    "the capital of france is paris.",
    "cats sleep all day and the capital sleeps at night.",
    "one two three four, the capital of italy is rome.",
] * 20


class Glued:
    """A tokenizer whose tokens decode alone without their space: ``decode`` puts a space
    before every token but the first (what a SentencePiece decoder does with ``▁``)."""

    def decode(self, ids):
        words = {1: "the", 2: "capital", 3: "is", 4: "paris"}
        return " ".join(words[i] for i in ids)


def test_token_texts_by_hand():
    assert token_texts([1, 2, 3, 4], Glued()) == ["the", " capital", " is", " paris"]
    assert token_texts([2, 4], Glued(), window=0) == ["capital", "paris"]  # no context: alone
    assert token_texts(torch.tensor([7, 8]).tolist()) == ["7", "8"]  # no tokenizer: the ids
    assert token_texts([], Glued()) == []
    with pytest.raises(ValueError, match="window must be >= 0, got -1"):
        token_texts([1], Glued(), window=-1)


def byte_level_bpe():
    """GPT-2-style: byte-level BPE, ``Ġ`` marks a leading space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    core.train_from_iterator(CORPUS, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>")


def metaspace_bpe():
    """Llama/SentencePiece-style: ``▁`` marks a leading space, dropped when decoded alone."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    core.decoder = decoders.Metaspace()
    core.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "<unk>"])
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>"
    )


@pytest.mark.parametrize("make", [byte_level_bpe, metaspace_bpe])
def test_token_texts_join_into_the_decoded_text(make):
    tokenizer = make()
    ids = tokenizer("the capital of italy is rome. cats sleep all day.")["input_ids"]
    texts = token_texts(ids, tokenizer)
    assert len(texts) == len(ids) > 8
    assert "".join(texts) == tokenizer.decode(ids)
    assert sum(t.startswith(" ") for t in texts) >= 8  # the words after the first keep a space
    if make is metaspace_bpe:  # decoded alone, a token loses its space: what the dashboard did
        alone = [tokenizer.decode([i]) for i in ids]
        assert "".join(alone) != tokenizer.decode(ids)


def tiny_lm(vocab_size: int):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("make", [byte_level_bpe, metaspace_bpe])
def test_dashboard_and_eval_report_show_the_same_token_text(make):
    from attnkit.llm.checks import AnswerLength
    from attnkit.llm.generation import add_trace_hook
    from attnkit.llm.suite import Example, Suite
    from attnkit.monitor.client import summarize

    tokenizer = make()
    model = tiny_lm(len(tokenizer))
    examples = [
        Example("fr", "context: the capital of france is paris. question: capital?",
                "the capital of france is paris."),
        Example("cats", "context: cats sleep all day. question: who?", "cats sleep all day."),
    ]  # fmt: skip
    traces = []
    handle = add_trace_hook(traces.append)
    try:
        result = Suite([AnswerLength()]).run(examples, model, tokenizer, max_new_tokens=6)
    finally:
        handle.remove()
    assert len(traces) == len(result.examples) == 2
    for trace, row in zip(traces, result.examples, strict=True):
        shown = summarize(trace, tokenizer=tokenizer, per_token=True)["trace"]  # the dashboard
        assert shown["context"]["tokens"] == row.context_tokens  # the eval report
        start, stop = trace.context
        assert "".join(row.context_tokens) == tokenizer.decode(trace.prompt_ids[start:stop])
        # the answer's tokens (random bytes from a random model: no joining property here)
        assert shown["tokens"] == token_texts(trace.new_ids.tolist(), tokenizer)
        assert len(shown["tokens"]) == row.new_tokens == 6
