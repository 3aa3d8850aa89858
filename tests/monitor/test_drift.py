"""Drift tests: hand-computed statistics, verdicts on known shifts, thresholds at their bounds."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.monitor.drift import (
    SMALL_REFERENCE,
    STAT_TESTS,
    default_method,
    drift_report,
    drift_test,
    js_distance,
    ks,
    psi,
    wasserstein,
)

EPS = 1e-4


def _normal_pair(n, shift, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, n), rng.normal(shift, 1.0, n)


# --- hand-computed numbers ----------------------------------------------------------------------


def test_psi_by_hand():
    # bins=2 on [0, 1, 2, 3]: edges 0, 1.5, 3 -> bins (<0), [0, 1.5], (1.5, 3], (>3)
    # reference proportions (0, .5, .5, 0); current [0, 0, 0, 4] -> (0, .75, 0, .25)
    expected = (
        (0.75 - 0.5) * math.log(0.75 / 0.5)
        + (EPS - 0.5) * math.log(EPS / 0.5)
        + (0.25 - EPS) * math.log(0.25 / EPS)
    )
    assert psi([0, 1, 2, 3], [0, 0, 0, 4], bins=2) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(6.3143, abs=1e-4)


def test_psi_with_tied_quantiles():
    # quantile edges of [1, 1, 1, 2] with bins=2 are 1, 1, 2 -> bins [1, 1] and (1, 2]
    assert psi([1, 1, 1, 2], [1, 1, 1, 2], bins=2) == 0.0
    # current moved to 2: r = (.75, .25), c = (0, 1)
    expected = (EPS - 0.75) * math.log(EPS / 0.75) + 0.75 * math.log(1 / 0.25)
    assert psi([1, 1, 1, 2], [2, 2], bins=2) == pytest.approx(expected, rel=1e-12)


def test_jensen_shannon_by_hand():
    # two shared bins on [0, 1]: r = (.5, .5), c = (.25, .75), m = (.375, .625)
    kl_r = 0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625)
    kl_c = 0.25 * math.log(0.25 / 0.375) + 0.75 * math.log(0.75 / 0.625)
    expected = math.sqrt((kl_r + kl_c) / 2)
    assert js_distance([0, 0, 1, 1], [0, 1, 1, 1], bins=2) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.18391, abs=1e-5)
    # disjoint supports: the largest distance, sqrt(ln 2)
    assert js_distance([0, 0], [1, 1], bins=2) == pytest.approx(math.sqrt(math.log(2)))


def test_wasserstein_and_ks_by_hand():
    assert wasserstein([0, 2], [1, 3]) == pytest.approx(1.0)  # distance 1, reference std 1
    assert wasserstein([0, 4], [1, 5]) == pytest.approx(0.5)  # same shift, std 2
    statistic, p_value = ks([1, 2, 3], [4, 5, 6])
    assert statistic == 1.0 and p_value == pytest.approx(2 / math.comb(6, 3))


# --- verdicts on known shifted and unshifted samples ------------------------------------------

SIZES = {
    "ks": (200, 1000, 5000),
    "psi": (2000, 5000, 20000),
    "wasserstein": (2000, 5000, 20000),
    "jensenshannon": (2000, 5000, 20000),
}


@pytest.mark.parametrize("method", list(STAT_TESTS))
def test_unshifted_samples_do_not_drift_and_shifted_ones_do(method):
    for n in SIZES[method]:
        for seed in range(3):
            same = drift_test(*_normal_pair(n, 0.0, seed), method=method)
            moved = drift_test(*_normal_pair(n, 0.5, seed), method=method)
            assert not same.drifted, (n, seed, same)
            assert moved.drifted, (n, seed, moved)
            assert same.threshold == moved.threshold == STAT_TESTS[method].default_threshold


def test_default_method_verdicts_at_small_and_large_sizes():
    for n in (100, 300, 1000, 3000, 10000):
        same = drift_test(*_normal_pair(n, 0.0, n))
        moved = drift_test(*_normal_pair(n, 0.5, n))
        assert same.method == moved.method == default_method(n)
        assert not same.drifted and moved.drifted, (n, same, moved)


def test_ks_false_alarm_rate_is_its_level():
    alarms = [drift_test(*_normal_pair(200, 0.0, seed), method="ks").drifted for seed in range(200)]
    assert 0.02 <= np.mean(alarms) <= 0.09  # level 0.05; binomial sd 0.015


def test_documented_sampling_noise_at_1000_values():
    psis, jss = [], []
    for seed in range(100):
        reference, current = _normal_pair(1000, 0.0, seed)
        psis.append(psi(reference, current))
        jss.append(js_distance(reference, current))
    assert 0.018 <= np.mean(psis) <= 0.03  # (bins - 1)(1/n + 1/m) = 0.018 plus the outer bins
    assert 0.08 <= np.mean(jss) <= 0.095  # sqrt(29 * 0.002 / 8) = 0.085


# --- thresholds ---------------------------------------------------------------------------------


def test_documented_thresholds():
    thresholds = {name: test.default_threshold for name, test in STAT_TESTS.items()}
    assert thresholds == {"psi": 0.1, "ks": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1}
    assert SMALL_REFERENCE == 1000


@pytest.mark.parametrize("method", list(STAT_TESTS))
def test_threshold_is_inclusive_at_its_boundary(method):
    reference, current = _normal_pair(3000, 0.2, 1)
    result = drift_test(reference, current, method=method)
    at = drift_test(reference, current, method=method, threshold=result.score)
    assert at.drifted and at.threshold == result.score
    beyond = np.nextafter(result.score, -np.inf if method == "ks" else np.inf)
    assert not drift_test(reference, current, method=method, threshold=beyond).drifted


def test_wasserstein_default_threshold_at_its_boundary():
    reference = np.tile([-1.0, 1.0], 500)  # std exactly 1
    assert not drift_test(reference, reference + 0.0999, method="wasserstein").drifted
    assert drift_test(reference, reference + 0.1001, method="wasserstein").drifted


def test_ks_default_threshold_at_its_boundary():
    # disjoint samples: exact p = 2 / C(n + m, n)
    above = drift_test([1, 2, 3], [4, 5, 6], method="ks")  # p = 0.1
    below = drift_test([1, 2, 3, 4], [5, 6, 7, 8], method="ks")  # p = 2 / 70 = 0.029
    assert above.p_value == pytest.approx(0.1) and not above.drifted
    assert below.p_value == pytest.approx(2 / 70) and below.drifted


def test_psi_default_threshold_at_its_boundary():
    # 10 quantile bins of 0..999 hold 100 values each; the current window moves k values from
    # the top bin to the bottom one: PSI = k/1000 * ln((100 + k) / (100 - k)), which crosses 0.1
    # between k = 64 (0.0970) and k = 65 (0.1008)
    reference = np.arange(1000.0)
    verdicts = {}
    for k in (64, 65):
        current = reference.copy()
        current[-k:] = 0.0
        result = drift_test(reference, current, method="psi")
        exact = k / 1000 * math.log((100 + k) / (100 - k))
        assert result.statistic == pytest.approx(exact, rel=1e-12)
        verdicts[k] = result.drifted
    assert verdicts == {64: False, 65: True}


def test_jensen_shannon_default_threshold_at_its_boundary():
    # values 0 and 1 fall in the first and last of the 30 shared bins; the reference is half and
    # half, the current window holds 500 + k zeros of 1000: the distance crosses 0.1 between
    # k = 139 (0.09943) and k = 140 (0.10016)
    reference = np.repeat([0.0, 1.0], 500)
    verdicts = {}
    for k in (139, 140):
        current = np.repeat([0.0, 1.0], [500 + k, 500 - k])
        q = (500 + k) / 1000
        middle = (0.5 + q) / 2
        kl_r = 0.5 * math.log(0.5 / middle) + 0.5 * math.log(0.5 / (1 - middle))
        kl_c = q * math.log(q / middle) + (1 - q) * math.log((1 - q) / (1 - middle))
        result = drift_test(reference, current, method="jensenshannon")
        assert result.statistic == pytest.approx(math.sqrt((kl_r + kl_c) / 2), rel=1e-12)
        verdicts[k] = result.drifted
    assert verdicts == {139: False, 140: True}


def test_default_method_switches_at_1000_reference_values():
    assert drift_test(np.arange(1000.0), np.arange(5.0)).method == "ks"
    assert drift_test(np.arange(1001.0), np.arange(5.0)).method == "wasserstein"
    with_nan = np.append(np.arange(1000.0), np.nan)  # 1000 finite values
    assert drift_test(with_nan, np.arange(5.0)).method == "ks"
    assert default_method(SMALL_REFERENCE) == "ks"
    assert default_method(SMALL_REFERENCE + 1) == "wasserstein"


# --- degenerate input ---------------------------------------------------------------------------


def test_nan_is_dropped_and_counted_out():
    result = drift_test([np.nan, 1.0, 2.0, 3.0], [2.0, np.nan, 4.0], method="ks")
    assert (result.reference_size, result.current_size) == (3, 2)
    assert result.p_value == ks([1.0, 2.0, 3.0], [2.0, 4.0])[1]


@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [
        ([], [1.0], "reference is empty"),
        ([1.0], [np.nan, np.nan], "current is empty"),
        ([1.0, np.inf], [1.0], "reference holds 1 infinite"),
        ([[1.0, 2.0]], [1.0], "reference must be a 1-D sample"),
    ],
)
def test_bad_samples_raise(reference, current, message):
    for method in STAT_TESTS:
        with pytest.raises(ValueError, match=message):
            drift_test(reference, current, method=method)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="method must be one of"):
        drift_test([1.0], [1.0], method="chi2")
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        drift_test([1.0], [1.0], threshold=-0.1)
    with pytest.raises(ValueError, match="bins must be positive"):
        psi([1.0], [1.0], bins=0)


def test_constant_windows():
    constant = np.full(50, 3.0)
    for method in STAT_TESTS:
        result = drift_test(constant, constant[:20], method=method)
        assert not result.drifted and result.statistic == 0.0, result
    assert drift_test(constant, constant, method="ks").p_value == 1.0
    assert drift_test(constant, constant + 1, method="wasserstein").statistic == math.inf
    for moved in (constant - 1, constant + 1):  # outer bins catch a move either way
        for method in STAT_TESTS:
            assert drift_test(constant, moved, method=method).drifted, method


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
)
def test_ranges_and_identity(reference, current):
    assert psi(reference, current) >= 0.0
    assert 0.0 <= js_distance(reference, current) <= math.sqrt(math.log(2)) + 1e-12
    assert js_distance(reference, current) == pytest.approx(js_distance(current, reference))
    assert wasserstein(reference, current) >= 0.0
    assert psi(reference, reference) == 0.0 and js_distance(reference, reference) == 0.0
    assert wasserstein(reference, reference) == 0.0 and ks(reference, reference)[1] == 1.0


# --- reports ------------------------------------------------------------------------------------


def test_report_dataset_drift_by_share():
    reference, moved = _normal_pair(500, 1.0, 0)
    steady = _normal_pair(500, 0.0, 1)
    two_of_three = drift_report(
        {"a": reference, "b": reference, "c": steady[0]},
        {"a": moved, "b": moved, "c": steady[1]},
    )
    assert [r.drifted for r in two_of_three.results.values()] == [True, True, False]
    assert two_of_three.drifted_share == pytest.approx(2 / 3) and two_of_three.drifted
    half = drift_report({"a": reference, "c": steady[0]}, {"a": moved, "c": steady[1]})
    assert half.drifted_share == 0.5 and half.drifted  # the share is inclusive
    third = drift_report(
        {"a": reference, "c": steady[0], "d": steady[0]},
        {"a": moved, "c": steady[1], "d": steady[1]},
    )
    assert third.drifted_share == pytest.approx(1 / 3) and not third.drifted
    assert {r.method for r in third.results.values()} == {"ks"}
    forced = drift_report({"a": reference}, {"a": moved}, method="psi")
    assert forced.results["a"].method == "psi" and forced.results["a"].signal == "a"


def test_report_skips_signals_without_values_and_checks_names():
    report = drift_report(
        {"score": [np.nan, np.nan], "entropy": [1.0, 2.0, 3.0], "lr": []},
        {"score": [0.5], "entropy": [1.0, 2.0], "lr": [1.0]},
    )
    assert list(report.results) == ["entropy"]
    assert report.skipped == {
        "score": "no values in the reference window",
        "lr": "no values in the reference window",
    }
    empty = drift_report({"score": [np.nan]}, {"score": [np.nan]})
    assert empty.results == {} and empty.drifted_share == 0.0 and not empty.drifted
    assert empty.skipped["score"] == "no values in the reference and current window"
    with pytest.raises(ValueError, match="must name the same signals"):
        drift_report({"a": [1.0]}, {"b": [1.0]})
    with pytest.raises(ValueError, match="hold no signal"):
        drift_report({}, {})


def test_result_score_and_rule():
    result = drift_test([1, 2, 3], [4, 5, 6], method="ks")
    assert result.score == result.p_value and result.rule == "p <= 0.05"
    result = drift_test([1, 2, 3], [4, 5, 6], method="psi")
    assert result.score == result.statistic and result.rule == "psi >= 0.1"


def test_jensen_shannon_on_a_range_too_narrow_for_its_bins():
    """Found by hypothesis: 0 and the smallest denormal cannot hold 30 distinct bin edges."""
    assert 0.0 <= js_distance([0.0], [5e-324]) <= math.sqrt(math.log(2))  # no error
    assert js_distance([0.0, 5e-324], [0.0, 5e-324]) == 0.0
    assert js_distance([0.0], [1e-300]) == pytest.approx(math.sqrt(math.log(2)))


def test_a_registered_stat_test_runs_in_drift_test_reports_and_alert_rules(monkeypatch):
    from attnkit.monitor import drift
    from attnkit.monitor.alerts import Rule

    monkeypatch.setattr(drift, "STAT_TESTS", dict(drift.STAT_TESTS))
    monkeypatch.setattr("attnkit.monitor.alerts.STAT_TESTS", drift.STAT_TESTS)
    drift.register_stat_test("mean_shift", lambda r, c: (abs(c.mean() - r.mean()), None), 0.5)
    result = drift.drift_test([0.0, 1.0], [1.0, 2.0], method="mean_shift")
    assert (result.statistic, result.threshold, result.drifted, result.rule) == (
        1.0, 0.5, True, "mean_shift >= 0.5")  # fmt: skip
    assert result.score == 1.0 and result.p_value is None
    report = drift.drift_report({"x": [0.0, 1.0]}, {"x": [0.2, 1.2]}, method="mean_shift")
    assert report.results["x"].statistic == pytest.approx(0.2) and not report.drifted
    Rule(name="r", signal="x", kind="drift", method="mean_shift")  # accepted by alert rules
    with pytest.raises(ValueError, match="mean_shift"):
        drift.drift_test([0.0], [1.0], method="nope")  # the message lists the registered tests


def test_register_stat_test_rejects_bad_arguments():
    from attnkit.monitor.drift import register_stat_test

    with pytest.raises(ValueError, match="name"):
        register_stat_test("", lambda r, c: (0.0, None), 0.1)
    with pytest.raises(TypeError, match="func"):
        register_stat_test("x", 3, 0.1)
    with pytest.raises(ValueError, match="default_threshold"):
        register_stat_test("x", lambda r, c: (0.0, None), -1)
