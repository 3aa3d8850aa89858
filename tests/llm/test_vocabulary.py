"""The vocabulary of generation signals, the one mean of a signal, the one detector scoring."""

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

from attnkit.llm import signals
from attnkit.llm.checks import AnswerDetector, Condition, DetectorScore, SignalCheck
from attnkit.llm.detection import answer_score, make_detector
from attnkit.llm.generation import GenerationTrace
from attnkit.llm.lookback_lens import LookbackLens, span_features
from attnkit.llm.signals import (
    RANGES,
    RECORD_SIGNALS,
    ROUNDING,
    TOKEN_SIGNALS,
    TRACE_SIGNALS,
    VOCABULARY,
    signal_mean,
)


def make_trace(steps=3, seed=None, **fields):
    """``steps`` new tokens, 2 layers, 2 heads; random signals in their ranges."""
    g = torch.Generator().manual_seed(steps if seed is None else 100 + seed)
    values = {
        "lookback_ratio": torch.rand(steps, 2, 2, generator=g),
        "entropy": torch.rand(steps, 2, 2, generator=g) * 3,
        "sink": torch.rand(steps, 2, 2, generator=g),
        "max_weight": torch.rand(steps, 2, 2, generator=g),
        "retrieval": torch.rand(steps, 2, 2, generator=g) > 0.5,
    }
    values.update(fields)
    return GenerationTrace(
        text="x" * steps, prompt_ids=torch.arange(6), new_ids=torch.arange(steps),
        context=(1, 4), layers=["a", "b"], context_weights=torch.full((steps, 3), 1 / 3),
        **values,
    )  # fmt: skip


def test_every_entry_is_a_signal_with_a_closed_range_and_a_meaning():
    trace_fields = {f.name for f in dataclasses.fields(GenerationTrace)}
    assert len(VOCABULARY) == len(signals._ENTRIES)  # names are unique
    for name, signal in VOCABULARY.items():
        assert signal.name == name and signal.low < signal.high and RANGES[name] == signal.range
        assert signal.field is None or signal.field in trace_fields
        assert len(signal.description) > 20 and signal.label
    assert "Chuang et al. 2024" in VOCABULARY["lookback_ratio"].description
    assert "Wu et al. 2024" in VOCABULARY["retrieval"].description
    assert RANGES["entropy"] == (0.0, signals.MAX_ENTROPY) == (0.0, 1000.0)
    # the derived lists keep the registry's order
    order = list(VOCABULARY)
    for names in (RECORD_SIGNALS, TOKEN_SIGNALS, TRACE_SIGNALS):
        assert list(names) == sorted(names, key=order.index)
    assert set(TRACE_SIGNALS) == set(RECORD_SIGNALS) & set(TOKEN_SIGNALS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        VOCABULARY["sink"].low = -1.0


def test_import_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, attnkit.llm.signals\n"
        "heavy = {'transformers', 'sklearn', 'sqlalchemy', 'fastapi', 'pydantic', 'scipy'}\n"
        "assert not heavy & {m.split('.')[0] for m in sys.modules}, heavy & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_signal_mean_by_hand():
    assert signal_mean(torch.tensor([[0.2, 0.4], [0.6, 0.8]]), "sink") == pytest.approx(0.5)
    assert signal_mean(torch.tensor([True, False, False, False]), "retrieval") == 0.25
    assert signal_mean(torch.zeros(0, 2, 2), "lookback_ratio") is None  # no tokens: no mean
    # rounding noise past a bound is the bound; more than ROUNDING past it is kept (and refused
    # downstream by the monitor's schema)
    assert signal_mean(torch.full((3,), -1e-9), "entropy") == 0.0
    assert signal_mean(torch.full((3,), 1 + ROUNDING / 2, dtype=torch.float64), "sink") == 1.0
    assert signal_mean(torch.full((3,), -1e-3), "entropy") == pytest.approx(-1e-3)
    with pytest.raises(ValueError, match="name must be one of .*got 'attention'"):
        signal_mean(torch.ones(2), "attention")


def test_check_suite_and_client_report_the_same_mean():
    from attnkit.llm.suite import Example, _record
    from attnkit.monitor.client import summarize

    trace = make_trace(entropy=torch.full((3, 2, 2), -1e-9))  # near one-hot weights
    record = summarize(trace)
    row = _record(Example("a", "p" * 6, (1, 4)), trace, tokenizer=None)
    assert list(row.signals) == list(TRACE_SIGNALS)
    for name in TRACE_SIGNALS:
        check = SignalCheck(name, Condition(fail_below=0))
        expected = getattr(trace, name).double().mean().item() if name != "entropy" else 0.0
        assert check.measure(trace, None) == record[name] == row.signals[name]
        assert record[name] == pytest.approx(expected, abs=1e-7)
    # an empty answer: the check has no value (FAIL), the record 0 (a number the schema takes),
    # the eval report NaN
    empty = make_trace(steps=0)
    for name in TRACE_SIGNALS:
        assert SignalCheck(name, Condition(fail_below=0)).measure(empty, None) is None
        assert summarize(empty)[name] == 0.0
        assert math.isnan(_record(Example("a", "p" * 6, (1, 4)), empty, None).signals[name])
    with pytest.raises(ValueError, match="signal must be one of"):
        SignalCheck("retrieval", Condition(fail_below=0))  # per token only: no per-answer check


def lookback_lens():
    rng = np.random.default_rng(0)
    features = rng.random((40, 4))
    return LookbackLens().fit(features, (features.mean(1) > 0.5).astype(int))


def test_answer_score_is_what_checks_and_the_client_record():
    from attnkit.monitor.client import summarize

    lens, trace = lookback_lens(), make_trace(steps=6)
    by_hand = lens.predict_proba(span_features(trace.lookback_ratio)[None])[0]
    assert answer_score(lens, trace) == pytest.approx(by_hand)
    assert DetectorScore(lens).measure(trace, None) == answer_score(lens, trace)
    assert summarize(trace, detector=lens)["detector_score"] == answer_score(lens, trace)
    windows = [trace.lookback_ratio[i : i + 4].mean(0).flatten().double() for i in range(3)]
    windowed = max(lens.predict_proba(np.stack(windows)))
    assert answer_score(lens, trace, window=4) == pytest.approx(windowed)
    assert DetectorScore(lens, window=4).measure(trace, None) == pytest.approx(windowed)
    assert DetectorScore(lens).measure(make_trace(steps=0), None) is None


def test_answer_score_of_the_detectors(fitted_detector):
    from attnkit.llm.readout import AnswerSignals

    gen = torch.Generator().manual_seed(3)
    r = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    answer = AnswerSignals(r(3, 2, 4), r(3, 2, 4) > 0.5, r(3, 2, 4), -r(3, 2, 4), r(3, 2, 4),
                           r(3, 2), -r(3), r(3), r(2, 32))  # fmt: skip
    logistic, unsupervised = fitted_detector("redeep"), fitted_detector("llm-check attention")
    assert answer_score(logistic, answer) == pytest.approx(logistic.probability([answer])[0])
    assert answer_score(unsupervised, answer) == pytest.approx(unsupervised.predict([answer])[0])
    check = AnswerDetector(logistic)
    trace = make_trace()
    check._signals[id(trace)] = answer
    assert check.measure(trace, None) == answer_score(logistic, answer)
    with pytest.raises(ValueError, match="needs the model's replay"):  # a trace is not enough
        answer_score(logistic, make_trace())
    lens = fitted_detector("lookback lens")
    with pytest.raises(ValueError, match="window applies to a LookbackLens"):
        answer_score(lens, answer, window=2)
    with pytest.raises(ValueError, match="window applies to a LookbackLens"):
        DetectorScore(lens, window=2)
    with pytest.raises(TypeError, match="fitted Detector or LookbackLens"):
        answer_score(object(), answer)
    # a windowed lookback lens scores a trace alone: its largest window's probability
    windowed = make_detector("lookback lens", window=2)
    windowed.fit([make_trace(4, seed=s) for s in range(10)], [0, 1] * 5)
    trace = make_trace(steps=5)
    rows = np.stack([trace.lookback_ratio[i : i + 2].mean(0).flatten().double() for i in range(4)])
    assert answer_score(windowed, trace) == pytest.approx(max(windowed.predict_proba(rows)))


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("attnkit.llm.detection", "trace_score", answer_score),
        ("attnkit.monitor.client", "ROUNDING", ROUNDING),
    ],
)
def test_moved_names_warn_and_give_the_same_object(module, old, new):
    import importlib

    home = importlib.import_module(module)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = getattr(home, old)
    assert found is new
    assert [w.category for w in caught] == [DeprecationWarning]
    assert f"{module}.{old} is deprecated" in str(caught[0].message)


def test_the_old_detector_module_path_warns_and_gives_the_lookback_lens_module():
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from attnkit.llm.detector import LookbackLens, span_features, window_features\n"
        "import attnkit.llm.lookback_lens as home\n"
        "assert (LookbackLens, span_features, window_features) == (home.LookbackLens,\n"
        "    home.span_features, home.window_features)\n"
        "assert [w.category for w in caught] == [DeprecationWarning], caught\n"
        "assert 'use attnkit.llm.lookback_lens' in str(caught[0].message)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
