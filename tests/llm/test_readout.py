"""read_answers: every signal against an oracle from the Hugging Face eager path."""

import math

import pytest
import torch

from attnkit.llm.conflict import label_conflict, make_conflict_examples, make_world
from attnkit.llm.readout import read_answers
from attnkit.llm.testbed import TestbedConfig, answer_log_prob, run_examples

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def answered(tmp_path_factory):
    """A random 2-layer, 2-head model of the testbed's vocabulary, sdpa and eager, and sampled
    answers (random weights: the answers vary in length)."""
    from attnkit.llm.conflict import load_conflict, save_conflict
    from attnkit.models.lm import CausalLM

    torch.manual_seed(0)
    world = make_world(num_keys=8, seed=0)
    config = TestbedConfig(dim=16, hidden_dim=32, num_layers=2, num_heads=2).model_config(
        world.task
    )
    directory = save_conflict(CausalLM(config), world, tmp_path_factory.mktemp("m"))
    model, tokenizer, _ = load_conflict(directory)
    eager, _, _ = load_conflict(directory, attn_implementation="eager")
    torch.manual_seed(1)
    answers = run_examples(model, tokenizer, make_conflict_examples(world, 6, seed=0),
                           label=label_conflict, max_new_tokens=5, do_sample=True)  # fmt: skip
    return model, eager, answers


def test_signals_match_eager_attention(answered):
    model, eager, answers = answered
    signals = read_answers(model, answers, batch_size=4)  # padded batches
    assert len(signals) == len(answers)
    for answer, s in zip(answers, signals, strict=True):
        trace = answer.trace
        n, prompt = len(trace.new_ids), len(trace.prompt_ids)
        sequence = torch.cat([trace.prompt_ids, trace.new_ids])[None]
        with torch.no_grad():
            out = eager(input_ids=sequence, output_attentions=True, output_hidden_states=True)
        weights = torch.stack(out.attentions, 1)[0]  # (L, H, T, T)
        queries = torch.arange(prompt - 1, prompt - 1 + n)
        start, stop = trace.context
        mass = weights[:, :, queries, start:stop].sum(-1).permute(2, 0, 1)  # (n, L, H)
        torch.testing.assert_close(s.context_mass, mass, atol=1e-5, rtol=1e-4)
        diag = weights[:, :, queries, queries].log().permute(2, 0, 1)
        torch.testing.assert_close(s.log_diag, diag, atol=1e-4, rtol=1e-4)
        assert s.log_prob.mean().item() == pytest.approx(answer.log_prob, abs=1e-5)
        assert s.log_prob.mean().item() == pytest.approx(answer_log_prob(model, trace), abs=1e-5)
        log_p = out.logits[0, queries].log_softmax(-1)
        torch.testing.assert_close(s.entropy, -(log_p.exp() * log_p).sum(-1), atol=1e-5, rtol=1e-4)
        # the probe's input: mean over the answer's queries of each layer's output
        torch.testing.assert_close(s.hidden[0], out.hidden_states[1][0, queries].mean(0),
                                   atol=1e-5, rtol=1e-4)  # fmt: skip
        assert s.ecs.shape == (n, 2, 2) and s.ecs.abs().max() <= 1 + 1e-6  # a cosine
        assert s.pks.shape == (n, 2) and (s.pks >= 0).all() and (s.pks <= math.log(2) + 1e-6).all()
        torch.testing.assert_close(s.lookback_ratio, trace.lookback_ratio.float())


def test_ecs_and_pks_oracles(answered):
    """ECS and PKS by hand from hooks on the eager model, for one answer."""
    model, eager, answers = answered
    answer = answers[0]
    s = read_answers(model, [answer])[0]
    trace = answer.trace
    n, prompt = len(trace.new_ids), len(trace.prompt_ids)
    sequence = torch.cat([trace.prompt_ids, trace.new_ids])[None]
    mids = []
    hooks = [layer.post_attention_layernorm.register_forward_pre_hook(
        lambda m, args: mids.append(args[0])) for layer in eager.model.layers]  # fmt: skip
    outs = []
    hooks += [layer.register_forward_hook(
        lambda m, args, o: outs.append(o[0] if isinstance(o, tuple) else o))
        for layer in eager.model.layers]  # fmt: skip
    with torch.no_grad():
        attn = torch.stack(eager(input_ids=sequence, output_attentions=True).attentions, 1)[0]
    for h in hooks:
        h.remove()
    queries = torch.arange(prompt - 1, prompt - 1 + n)
    start, stop = trace.context
    k = max(1, math.ceil(0.1 * (stop - start)))
    last = outs[-1][0]
    for t, q in enumerate(queries.tolist()):
        for layer in range(2):
            for head in range(2):
                top = attn[layer, head, q, start:stop].topk(k).indices + start
                expected = torch.cosine_similarity(last[top].mean(0), last[q], dim=0)
                assert s.ecs[t, layer, head].item() == pytest.approx(expected.item(), abs=1e-4)
            lens = [eager.lm_head(eager.model.norm(x[0, q])).log_softmax(-1)
                    for x in (mids[layer], outs[layer])]  # fmt: skip
            p, r = lens[0].exp(), lens[1].exp()
            m = (p + r) / 2
            jsd = 0.5 * (p * (p / m).log()).sum() + 0.5 * (r * (r / m).log()).sum()
            assert s.pks[t, layer].item() == pytest.approx(jsd.item(), abs=1e-5)


def test_errors(answered):
    model, _, answers = answered
    with pytest.raises(ValueError, match="batch_size"):
        read_answers(model, answers, batch_size=0)
    with pytest.raises(ValueError, match="ecs_top"):
        read_answers(model, answers, ecs_top=0)
    with pytest.raises(TypeError, match="traces\\[0\\]"):
        read_answers(model, ["not a trace"])
    with pytest.raises(TypeError, match="Llama-family"):
        read_answers(torch.nn.Linear(2, 2), answers)
