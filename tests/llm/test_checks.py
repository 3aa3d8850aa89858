"""Checks and conditions: statuses at the bounds, dataset shares, each check's value."""

import math

import numpy as np
import pytest
import torch

from attnkit.llm.checks import (
    AnswerLength,
    Condition,
    DetectorScore,
    ExpectedAnswer,
    Refusal,
    ShareCondition,
    SignalCheck,
    Status,
    worst,
)
from attnkit.llm.generation import GenerationTrace
from attnkit.llm.lookback_lens import LookbackLens, span_features

P, W, F, S = Status.PASS, Status.WARN, Status.FAIL, Status.SKIP


def trace(text="the answer", steps=3, ratio=0.5, sink=0.1):
    full = torch.full((steps, 2, 2), 1.0)
    return GenerationTrace(
        text=text, prompt_ids=torch.arange(6), new_ids=torch.arange(steps), context=(1, 4),
        layers=["a", "b"], lookback_ratio=full * ratio, entropy=full * 2.0, sink=full * sink,
        max_weight=full * 0.5, retrieval=full.bool(),
    )  # fmt: skip


def test_condition_boundaries():
    c = Condition(fail_below=0.2, warn_below=0.4, warn_above=0.8, fail_above=0.9)
    values = [0.1999, 0.2, 0.3999, 0.4, 0.8, 0.8001, 0.9, 0.9001, -math.inf, None, math.nan]
    assert [c.status(v) for v in values] == [F, W, W, P, P, W, W, F, F, F, F]
    assert c.describe() == "FAIL < 0.2, WARN < 0.4, WARN > 0.8, FAIL > 0.9"
    one_sided = Condition(warn_above=0.5)
    assert [one_sided.status(v) for v in (-1e9, 0.5, 0.50001)] == [P, P, W]
    equal = Condition(fail_below=1, warn_below=1)  # equal bounds: below is FAIL, at is PASS
    assert [equal.status(v) for v in (0.999, 1)] == [F, P]


def test_condition_errors():
    with pytest.raises(ValueError, match="at least one bound"):
        Condition()
    with pytest.raises(ValueError, match="must be ordered"):
        Condition(fail_below=0.5, warn_below=0.2)
    with pytest.raises(ValueError, match="must be ordered"):
        Condition(warn_above=0.9, fail_above=0.5)
    with pytest.raises(TypeError, match="must be numbers"):
        Condition(fail_below="0.5")


def test_share_condition_boundaries():
    share = ShareCondition(warn=0.25, fail=0.5)
    # 4 examples: shares move in steps of 0.25
    assert share.status([F, F, P, P]) == (W, 0.5)  # failing share 0.5 is not above 0.5
    assert share.status([F, F, F, P]) == (F, 0.75)
    assert share.status([W, P, P, P]) == (P, 0.0)  # not passing 0.25 is not above 0.25
    assert share.status([W, F, P, P]) == (W, 0.25)
    assert share.status([F, S, S, P]) == (W, 0.5)  # skipped examples are left out
    assert share.status([S, S]) == (S, 0.0)
    strict = ShareCondition()
    assert strict.status([P, P]) == (P, 0.0)
    assert strict.status([P, W]) == (W, 0.0)
    assert strict.status([P, F]) == (F, 0.5)
    with pytest.raises(ValueError, match=r"fail must be a share in \[0, 1\]"):
        ShareCondition(fail=1.5)
    assert worst([P, S, W]) == W and worst([]) == P and worst([F, W]) == F


def test_signal_check_values_and_dataset_status():
    check = SignalCheck("lookback_ratio", Condition(fail_below=0.2, warn_below=0.4))
    assert check.name == "mean lookback ratio"
    traces = [trace(ratio=r) for r in (0.1, 0.2, 0.4, 0.9)]
    result = check.run(traces, [None] * 4)
    assert [o.value for o in result.outcomes] == pytest.approx([0.1, 0.2, 0.4, 0.9])
    assert [o.status for o in result.outcomes] == [F, W, P, P]
    assert result.status == F and result.failing == 0.25
    lenient = SignalCheck("sink", Condition(warn_above=0.5), ShareCondition(warn=0.5, fail=0.5))
    result = lenient.run([trace(sink=s) for s in (0.1, 0.6, 0.7)], [None] * 3)
    assert [o.status for o in result.outcomes] == [P, W, W] and result.status == W
    mixed = trace()
    ratio = torch.tensor([0.0, 1.0, 0.5]).view(3, 1, 1).expand(3, 2, 2)
    mixed = GenerationTrace(**{**mixed.__dict__, "lookback_ratio": ratio})
    assert check.measure(mixed, None) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="signal must be one of"):
        SignalCheck("attention", Condition(fail_below=0))
    with pytest.raises(ValueError, match="one entry per trace"):
        check.run([trace()], [])


def test_answer_length_units():
    t = trace(text="  Paris is  big ", steps=5)
    assert AnswerLength().measure(t, None) == 3
    assert AnswerLength(unit="tokens").measure(t, None) == 5
    assert AnswerLength(unit="characters").measure(t, None) == len("Paris is  big")
    check = AnswerLength(Condition(fail_below=1, warn_above=3))
    statuses = [check.judge(check.measure(trace(text=x), None)) for x in ("", "a b c", "a b c d")]
    assert statuses == [F, P, W]
    with pytest.raises(ValueError, match="unit must be one of"):
        AnswerLength(unit="lines")


def test_refusal_phrases_and_pattern():
    check = Refusal()
    answers = ["I'm sorry, I cannot help.", "Paris.", "AS AN AI model", "sorry"]
    assert [check.measure(trace(text=a), None) for a in answers] == [1.0, 0.0, 1.0, 0.0]
    result = check.run([trace(text=a) for a in answers], [None] * 4)
    assert [o.status for o in result.outcomes] == [F, P, F, P] and result.failing == 0.5
    custom = Refusal(phrases=[], pattern=r"\bno comment\b", status="WARN")
    assert custom.judge(custom.measure(trace(text="No comment."), None)) == W
    assert custom.judge(custom.measure(trace(text="nocomment"), None)) == P
    with pytest.raises(ValueError, match="not a regular expression"):
        Refusal(pattern="(")
    with pytest.raises(TypeError, match="phrases must be a list of str"):
        Refusal(phrases="sorry")


def test_expected_answer_skips_examples_without_one():
    check = ExpectedAnswer()
    traces = [trace(text="It is Paris."), trace(text="Lyon"), trace(text="x")]
    result = check.run(traces, [" paris ", "Paris", None])
    assert [o.value for o in result.outcomes] == [1.0, 0.0, None]
    assert [o.status for o in result.outcomes] == [P, F, S]
    assert result.status == F and result.failing == 0.5


def test_detector_score_equals_the_detector():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0.7, 0.1, (20, 4)), rng.normal(0.3, 0.1, (20, 4))])
    detector = LookbackLens().fit(features, [0] * 20 + [1] * 20)
    grounded, invented = trace(ratio=0.8), trace(ratio=0.2)
    check = DetectorScore(detector)
    for t in (grounded, invented):
        expected = detector.predict_proba(span_features(t.lookback_ratio)[None])[0]
        assert check.measure(t, None) == pytest.approx(expected)
    result = check.run([grounded, invented], [None, None])
    assert [o.status for o in result.outcomes] == [P, F] and result.status == F
    # with windows: the largest window score; a 10-token answer invented in its last 4 tokens
    ratio = torch.cat([torch.full((6, 2, 2), 0.8), torch.full((4, 2, 2), 0.1)])
    mixed = GenerationTrace(**{**trace(steps=10).__dict__, "lookback_ratio": ratio})
    windowed = DetectorScore(detector, window=4)
    assert windowed.measure(mixed, None) > check.measure(mixed, None)
    assert windowed.measure(mixed, None) == pytest.approx(check.measure(trace(ratio=0.1), None))
    with pytest.raises(TypeError, match="fitted LookbackLens"):
        DetectorScore("detector.json")
