"""The key–value retrieval testbed: task, tokenizer, training, labels of generated answers."""

import dataclasses
import re

import numpy as np
import pytest
import torch

from attnkit.llm.generation import generate
from attnkit.llm.testbed import (
    ABSTAIN,
    LabelledTrace,
    RetrievalQuestion,
    TaskConfig,
    TestbedConfig,
    answer_log_prob,
    build_tokenizer,
    detector_inputs,
    label_answer,
    load_testbed,
    make_examples,
    run_examples,
    save_testbed,
    train_model,
)

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

TASK = TaskConfig(num_keys=20, min_facts=2, max_facts=4, alphabet="abcdefghijklmnop",
                  min_value_len=2, max_value_len=4)  # fmt: skip
FACT = re.compile(r"(k\d\d)=([a-zA-Z]+);")


def _facts(context):
    pairs = FACT.findall(context)
    assert "".join(f"{k}={v};" for k, v in pairs) == context  # nothing else in the context
    return dict(pairs)


def test_examples_ask_for_present_and_absent_keys():
    examples = make_examples(200, TASK, seed=3, absent_share=0.25)
    assert sum(not e.present for e in examples) == 50
    for e in examples:
        facts = _facts(e.context)
        assert TASK.min_facts <= len(facts) <= TASK.max_facts
        assert all(TASK.min_value_len <= len(v) <= TASK.max_value_len for v in facts.values())
        chars = "".join(facts.values())
        assert len(set(chars)) == len(chars)  # no character repeats within a context
        assert e.prompt == f"{e.context}|{e.key}="
        if e.present:
            assert facts[e.key] == e.value
        else:
            assert e.key not in facts and e.value is None
    assert make_examples(50, TASK, seed=3) == make_examples(50, TASK, seed=3)
    assert make_examples(50, TASK, seed=3) != make_examples(50, TASK, seed=4)


def test_shared_prefix_makes_every_value_of_a_context_start_alike():
    task = dataclasses.replace(TASK, min_value_len=3, shared_prefix=2)
    for e in make_examples(100, task, seed=5):
        facts = _facts(e.context)
        prefixes = {v[:2] for v in facts.values()}
        assert len(prefixes) == 1
        tails = "".join(v[2:] for v in facts.values())
        assert len(set(tails)) == len(tails) and not set(tails) & set(prefixes.pop())
        assert all(3 <= len(v) <= TASK.max_value_len for v in facts.values())
    # no shared prefix: the contexts of before the option, character for character
    assert make_examples(50, TASK, seed=0)[0].context == "k00=gojd;k15=mci;k10=hbak;k07=el;"


def test_abstention_token_and_labels():
    task = dataclasses.replace(TASK, abstain=True)
    assert task.vocabulary == [*TASK.vocabulary, ABSTAIN]  # appended: other ids unchanged
    tokenizer = build_tokenizer(task)
    ids = tokenizer("k01=ab;|k05=?;")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[-2:] == [ABSTAIN, ";"]
    assert ids[-2] == len(TASK.vocabulary)
    present = RetrievalQuestion("k01=ab;", "k01", "ab")
    absent = RetrievalQuestion("k01=ab;", "k05", None)
    assert label_answer(absent, "?;") == "abstained"
    assert label_answer(absent, "?a;") == "invented"
    assert label_answer(present, "?;") == "wrong"
    trace = None  # hallucinated only reads the verdict
    verdicts = ("grounded", "wrong", "invented", "abstained")
    assert [LabelledTrace(absent, trace, v, 0.0).hallucinated for v in verdicts] == [0, 1, 1, 0]


def test_training_batch_asks_about_absent_keys():
    import random

    from attnkit.llm.testbed import _training_batch

    task = dataclasses.replace(TASK, abstain=True)
    config = TestbedConfig(batch_size=8, questions=2, absent_questions=2)
    vocab = {t: i for i, t in enumerate(task.vocabulary)}
    ids, mask = _training_batch(random.Random(0), task, config, vocab)
    tokens = task.vocabulary
    for row, row_mask in zip(ids.tolist(), mask.tolist(), strict=True):
        text = "".join(tokens[i] for i in row if tokens[i] != "<pad>")
        context, questions = text.split("|")
        facts = _facts(context)
        answers = dict(FACT.findall(questions.replace("?", "Q")))
        assert len(answers) == min(2, len(facts)) + 2
        for key, answer in answers.items():
            assert answer == facts.get(key, "Q")
        targets = [tokens[i] for i, m in zip(row[1:], row_mask, strict=False) if m]
        assert "".join(targets) == "".join(f"{a};" for a in answers.values()).replace("Q", "?")


def test_labels_of_hand_made_answers():
    present = RetrievalQuestion("k01=abc;k02=de;", "k02", "de")
    absent = RetrievalQuestion("k01=abc;k02=de;", "k07", None)
    assert label_answer(present, "de;") == "grounded"
    assert label_answer(present, "de") == "grounded"  # cut off before the ';'
    assert label_answer(present, "dea;") == "wrong"
    assert label_answer(present, "abc;") == "wrong"  # another fact's value
    assert label_answer(present, "d;e") == "wrong"
    assert label_answer(absent, "de;") == "invented"
    assert label_answer(absent, "zz;") == "invented"


def test_tokenizer_round_trip_offsets_and_save(tmp_path):
    from transformers import PreTrainedTokenizerFast

    tokenizer = build_tokenizer(TASK)
    assert tokenizer.vocab_size == len(TASK.vocabulary) == 2 + 3 + 16 + 20
    prompt = "k03=abc;k17=po;|k17="
    encoded = tokenizer(prompt, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens == ["k03=", "a", "b", "c", ";", "k17=", "p", "o", ";", "|", "k17="]
    assert [prompt[a:b] for a, b in encoded["offset_mapping"]] == tokens
    assert tokenizer.decode(encoded["input_ids"]) == prompt
    assert tokenizer("k03= a b")["input_ids"] == tokenizer("k03=ab")["input_ids"]  # spaces ignored
    tokenizer.save_pretrained(tmp_path)
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    for example in make_examples(20, TASK, seed=0):
        ids = loaded(example.prompt)["input_ids"]
        assert ids == tokenizer(example.prompt)["input_ids"]
        assert loaded.decode(ids) == example.prompt


def test_task_config_errors():
    with pytest.raises(ValueError, match="num_keys"):
        TaskConfig(num_keys=101)
    with pytest.raises(ValueError, match="min_facts <= max_facts"):
        TaskConfig(min_facts=5, max_facts=4)
    with pytest.raises(ValueError, match="min_value_len <= max_value_len"):
        TaskConfig(min_value_len=0)
    with pytest.raises(ValueError, match="alphabet"):
        TaskConfig(alphabet="ab1")
    with pytest.raises(ValueError, match="alphabet"):
        TaskConfig(alphabet="aab")
    with pytest.raises(ValueError, match=r"max_facts \* \(max_value_len - shared_prefix\)"):
        TaskConfig(alphabet="abcdef", max_facts=3, max_value_len=3)
    TaskConfig(alphabet="abcdefg", max_facts=3, max_value_len=3, shared_prefix=1)  # 1 + 3 * 2
    with pytest.raises(ValueError, match=r"\(9\) must be <= len\(alphabet\) \(7\)"):
        TaskConfig(alphabet="abcdefg", max_facts=4, max_value_len=3, shared_prefix=1)
    with pytest.raises(ValueError, match=r"shared_prefix must be in \[0, min_value_len\)"):
        TaskConfig(min_value_len=3, shared_prefix=3)
    with pytest.raises(ValueError, match="absent_questions .2. needs a task with abstain=True"):
        train_model(TASK, TestbedConfig(absent_questions=2))
    with pytest.raises(ValueError, match="count"):
        make_examples(-1)
    with pytest.raises(ValueError, match="absent_share"):
        make_examples(4, absent_share=1.5)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        run_examples(None, None, make_examples(2), batch_size=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    config = TestbedConfig(dim=32, num_layers=2, num_heads=2, hidden_dim=64, steps=60,
                         batch_size=16, questions=2, warmup=10)  # fmt: skip
    with _threads(1):
        model, losses = train_model(TASK, config, seed=0)
    directory = save_testbed(model, TASK, tmp_path_factory.mktemp("testbed"))
    return model, losses, directory


class _threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def test_training_lowers_the_loss_and_is_deterministic(trained):
    _, losses, _ = trained
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5
    config = TestbedConfig(dim=32, num_layers=2, num_heads=2, hidden_dim=64, steps=3,
                         batch_size=4, questions=2, warmup=1)  # fmt: skip
    with _threads(1):
        _, first = train_model(TASK, config, seed=5)
        _, again = train_model(TASK, config, seed=5)
    assert first == again


def test_saved_testbed_loads_through_hugging_face(trained):
    model, _, directory = trained
    hf, tokenizer, task = load_testbed(directory)
    assert task == TASK
    ids = tokenizer("k03=abc;k17=po;|k17=", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, model(ids), atol=1e-5, rtol=1e-5)
    assert hf.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(";")


def test_run_examples_labels_every_answer(trained):
    model, _, directory = trained
    hf, tokenizer, _ = load_testbed(directory)
    examples = make_examples(6, TASK, seed=1)
    labelled = run_examples(hf, tokenizer, examples, max_new_tokens=6, batch_size=4)
    for item, example in zip(labelled, examples, strict=True):
        trace = item.trace
        assert item.example == example
        assert item.verdict == label_answer(example, tokenizer.decode(trace.new_ids))
        assert item.hallucinated == int(item.verdict != "grounded")
        start, stop = trace.context
        assert tokenizer.decode(trace.prompt_ids[start:stop]) == example.context
        # same greedy answer from attnkit's own model
        ours = model.generate(trace.prompt_ids[None], len(trace.new_ids))[
            0, len(trace.prompt_ids) :
        ]
        assert ours.tolist() == trace.new_ids.tolist()
        # the mean log-probability of the answer, step by step from the model
        sequence = torch.cat([trace.prompt_ids, trace.new_ids])
        with torch.no_grad():
            logp = model(sequence[None]).log_softmax(-1)[0]
        steps = [logp[len(trace.prompt_ids) - 1 + i, t] for i, t in enumerate(trace.new_ids)]
        assert item.log_prob == pytest.approx(float(torch.stack(steps).mean()), abs=1e-5)
    assert not any(item.example.present for item in labelled if item.verdict == "invented")


def test_detector_inputs_span_and_windows(trained):
    _, _, directory = trained
    hf, tokenizer, _ = load_testbed(directory)
    trace = generate(hf, tokenizer, "k03=abc;k17=po;|k17=", context="k03=abc;k17=po;",
                     max_new_tokens=5, min_new_tokens=5)  # fmt: skip
    example = RetrievalQuestion("k03=abc;k17=po;", "k17", "po")
    items = [LabelledTrace(example, trace, "grounded", 0.0),
             LabelledTrace(example, trace, "wrong", 0.0)]  # fmt: skip
    features, labels, groups = detector_inputs(items)
    assert features.shape == (2, 2 * 2) and labels.tolist() == [0, 1]
    np.testing.assert_allclose(features[0], trace.lookback_ratio.mean(0).flatten().numpy())
    windows, labels, groups = detector_inputs(items, window=2)
    assert windows.shape == (8, 4) and labels.tolist() == [0] * 4 + [1] * 4
    assert groups.tolist() == [0] * 4 + [1] * 4
    np.testing.assert_allclose(windows[1], trace.lookback_ratio[1:3].mean(0).flatten().numpy())


def test_answer_log_prob_needs_tokens(trained):
    _, _, directory = trained
    hf, tokenizer, _ = load_testbed(directory)
    trace = generate(hf, tokenizer, "k03=abc;|k03=", context="k03=abc;", max_new_tokens=2)
    empty = dataclasses.replace(trace, new_ids=trace.new_ids[:0])
    with pytest.raises(ValueError, match="no generated tokens"):
        answer_log_prob(hf, empty)


def test_grouped_folds_keep_an_answers_windows_together():
    from attnkit.llm.lookback_lens import LookbackLens

    # 40 answers with 5 windows each; windows of an answer share an identity feature and a
    # random label, so a split that scatters an answer's windows rewards memorising it
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 5)
    labels = np.repeat(rng.permutation([0, 1] * 20), 5)
    features = np.eye(40)[groups] + rng.normal(0, 0.01, (200, 40))
    lens = LookbackLens(c=100.0)
    assert lens.cross_validated_auroc(features, labels) > 0.95
    assert lens.cross_validated_auroc(features, labels, groups=groups) < 0.75
    with pytest.raises(ValueError, match="groups must hold one id per row"):
        lens.cross_validated_auroc(features, labels, groups=groups[:-1])
