"""Drift of a signal between a reference window and a current window.

Four tests on one numeric signal (1-D samples), each with an Evidently-like default threshold.
A result is *drifted* when its score reaches the threshold; the comparison is inclusive:

=================  ====================================================  ==================
method             statistic (score)                                     drifted when
=================  ====================================================  ==================
``psi``            Population Stability Index over 10 reference          PSI >= 0.1
                   quantile bins (Siddiqi 2006; Yurdakul 2018)
``ks``             two-sample Kolmogorov–Smirnov D; score = its p-value  p <= 0.05
``wasserstein``    Wasserstein-1 distance / std of the reference         >= 0.1
``jensenshannon``  Jensen–Shannon distance (natural log, range            >= 0.1
                   [0, sqrt(ln 2)]) on 30 equal-width bins shared by
                   both windows
=================  ====================================================  ==================

Each test is a :class:`StatTest` in :data:`STAT_TESTS` (as Evidently's stattests): a name, a
function of the two windows returning ``(statistic, p_value or None)``, and a default threshold.
A test with a p-value drifts when ``p <= threshold``, any other when ``statistic >= threshold``.
:func:`register_stat_test` adds one; :func:`drift_test`, drift alert rules and the monitor's
drift endpoint then accept its name.

Thresholds. PSI uses 0.1, Evidently's default and the conventional bound of "no significant
change" (0.1–0.2 is read as moderate, > 0.2 as significant): a monitor should warn early. The
others are Evidently's defaults for numeric columns.

Default method (``method=None``), as Evidently's data-drift preset for numeric columns: KS when
the reference has at most :data:`SMALL_REFERENCE` = 1000 values (a p-value is meaningful for small
samples), else the normalized Wasserstein distance (for large samples every tiny difference is
"significant" to KS, while a distance measures how large it is).

Sampling noise. With ``n`` reference and ``m`` current values from the same distribution, PSI is
about ``(bins - 1)(1/n + 1/m)`` and the Jensen–Shannon distance about
``sqrt((bins - 1)(1/n + 1/m) / 8)``; the normalized Wasserstein distance shrinks like
``1/sqrt(min(n, m))``. Measured on N(0, 1) windows with n = m (300 pairs each):

=========  ===========  ======================  =====================
n = m      PSI mean     Jensen–Shannon mean     Wasserstein/std mean
=========  ===========  ======================  =====================
200        0.14         0.19                    0.12
1000       0.024        0.087 (14% >= 0.1)      0.059 (3% >= 0.1)
5000       0.004        0.038                   0.026
=========  ===========  ======================  =====================

So use PSI, Jensen–Shannon and Wasserstein with a few thousand values per window, and KS (the
default) for small windows.

Missing and degenerate values. NaN values are dropped (they are missing measurements, e.g. a
detector score that was not computed); the sizes in :class:`DriftResult` count what remains.
A window that is empty, or empty after dropping NaN, or that holds ±inf, raises ``ValueError``.
Constant windows give well-defined results: identical constants show no drift under every
method (KS p = 1, distances 0); a constant reference and a different current window give
normalized Wasserstein ``inf`` (the distance divided by a zero std), PSI from its outer bins
(values below the reference minimum and above its maximum have bins of their own), KS and
Jensen–Shannon as usual. Narrow and extreme windows are handled too: values one float step
apart get as many bins as their range can hold (:func:`shared_edges`), and values near the
float limit (±1.7e308, whose differences overflow) or subnormal ones (5e-324, whose differences
underflow) are tested after dividing both windows by their largest magnitude, which changes
none of the scale-free statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from attnkit._moved import moved_name

__all__ = [
    "DATASET_DRIFT_SHARE",
    "JS_BINS",
    "PSI_BINS",
    "PSI_EPS",
    "SMALL_REFERENCE",
    "STAT_TESTS",
    "DriftReport",
    "DriftResult",
    "StatTest",
    "default_method",
    "drift_report",
    "drift_test",
    "js_distance",
    "ks",
    "psi",
    "register_stat_test",
    "shared_edges",
    "wasserstein",
]

SMALL_REFERENCE = 1000  # largest reference tested with KS by default; larger: Wasserstein
PSI_BINS = 10  # quantile bins of the reference
PSI_EPS = 1e-4  # proportion used for an empty bin (Evidently's value), so ln(0) never occurs
JS_BINS = 30  # equal-width bins over the range of both windows (Evidently's value)
DATASET_DRIFT_SHARE = 0.5  # a report is drifted when at least this share of signals drifted


@dataclass(frozen=True)
class DriftResult:
    """The outcome of one drift test.

    Attributes:
        signal: name of the tested signal.
        method: a name in :data:`STAT_TESTS`.
        statistic: the method's statistic (for ``ks`` the D statistic, not the p-value).
        threshold: the bound the score is compared with.
        drifted: ``p_value <= threshold`` for a test with a p-value, else
            ``statistic >= threshold``.
        p_value: the test's p-value (``ks``); ``None`` for a distance.
        reference_size: finite values in the reference window.
        current_size: finite values in the current window.
    """

    signal: str
    method: str
    statistic: float
    threshold: float
    drifted: bool
    p_value: float | None
    reference_size: int
    current_size: int

    @property
    def score(self) -> float:
        """The number compared with the threshold: the p-value where the test has one, else the
        statistic."""
        return self.statistic if self.p_value is None else self.p_value

    @property
    def rule(self) -> str:
        """The verdict rule in words, e.g. ``"p <= 0.05"`` or ``"psi >= 0.1"``."""
        if self.p_value is not None:
            return f"p <= {self.threshold:g}"
        return f"{self.method} >= {self.threshold:g}"


@dataclass(frozen=True)
class DriftReport:
    """Drift of several signals between two windows.

    Attributes:
        results: one :class:`DriftResult` per tested signal, by signal name.
        drifted_share: share of tested signals that drifted (0 when none was tested).
        drifted: dataset drift, ``drifted_share >= 0.5`` (Evidently's default share).
        skipped: signals that could not be tested (no finite value in a window) and why.
    """

    results: dict[str, DriftResult]
    drifted_share: float
    drifted: bool
    skipped: dict[str, str] = field(default_factory=dict)


def _sample(values: ArrayLike, name: str) -> np.ndarray:
    """A 1-D float array of the finite values of ``values`` (NaN dropped)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sample, got shape {array.shape}")
    if np.isinf(array).any():
        raise ValueError(f"{name} holds {int(np.isinf(array).sum())} infinite values")
    array = array[~np.isnan(array)]
    if array.size == 0:
        raise ValueError(f"{name} is empty (or all NaN): a drift test needs at least one value")
    return array


def _scaled(*samples: np.ndarray) -> tuple[np.ndarray, ...]:
    """The samples divided by their largest magnitude when it is so large that differences of
    values could overflow, or so small (subnormal) that they underflow; unchanged otherwise
    (every statistic here is scale-free)."""
    top = max(float(np.abs(sample).max()) for sample in samples)
    if top == 0.0 or 1e-300 <= top <= 1e300:
        return samples
    return tuple(sample / top for sample in samples)


def shared_edges(values: ArrayLike, bins: int) -> np.ndarray:
    """Equal-width bin edges over the range of ``values``: ``bins`` of them where the range can
    hold ``bins + 1`` distinct floats, fewer where it cannot (``0.3`` and
    ``0.30000000000000004``), and exact at both ends even near the float limit."""
    both = np.asarray(values, dtype=np.float64).ravel()
    low, high = float(both.min()), float(both.max())
    if low == high:
        return np.histogram_bin_edges(both, bins=bins)
    top = max(abs(low), abs(high))
    edges = np.linspace(low / top, high / top, bins + 1) * top  # no overflow of high - low
    edges[0], edges[-1] = low, high
    return np.unique(edges)


def _psi_bin(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value: 0 below ``edges[0]``, j in ``(edges[j-1], edges[j]]``, last above."""
    inner = np.maximum(np.searchsorted(edges, values, side="left"), 1)  # the minimum joins bin 1
    return np.where(values < edges[0], 0, inner)


def psi(reference: ArrayLike, current: ArrayLike, bins: int = PSI_BINS) -> float:
    """Population Stability Index, ``sum((c - r) * ln(c / r))`` over reference quantile bins.

    Bin edges ``e_0 .. e_bins`` are the reference's ``0, 1/bins, ..., 1`` quantiles; the bins
    are ``[e_0, e_1], (e_1, e_2], ..., (e_(bins-1), e_bins]`` plus one bin below the reference
    minimum and one above its maximum, so no current value is lost and a constant reference
    still has bins on both sides. ``r`` and ``c`` are the proportions of the two windows in each
    bin, an empty bin counting as :data:`PSI_EPS` (tied quantiles leave bins empty in both
    windows, which add nothing).
    """
    if bins < 1:
        raise ValueError(f"bins must be positive, got {bins}")
    ref, cur = _scaled(_sample(reference, "reference"), _sample(current, "current"))
    edges = np.quantile(ref, np.linspace(0.0, 1.0, bins + 1))
    size = bins + 2
    r = np.bincount(_psi_bin(edges, ref), minlength=size) / ref.size
    c = np.bincount(_psi_bin(edges, cur), minlength=size) / cur.size
    r, c = np.where(r == 0, PSI_EPS, r), np.where(c == 0, PSI_EPS, c)
    return float(np.sum((c - r) * np.log(c / r)))


def ks(reference: ArrayLike, current: ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov test (``scipy.stats.ks_2samp``): ``(D, p_value)``."""
    from scipy.stats import ks_2samp

    result = ks_2samp(_sample(reference, "reference"), _sample(current, "current"))
    return float(result.statistic), float(result.pvalue)


def wasserstein(reference: ArrayLike, current: ArrayLike) -> float:
    """Wasserstein-1 distance divided by the reference's standard deviation (``ddof=0``).

    Scale-free: a shift of the mean by 0.1 reference standard deviations scores 0.1. A constant
    reference gives 0 when the current window holds the same constant, else ``inf``.
    """
    from scipy.stats import wasserstein_distance

    ref, cur = _scaled(_sample(reference, "reference"), _sample(current, "current"))
    distance = float(wasserstein_distance(ref, cur))
    spread = float(np.std(ref))
    if spread == 0.0:
        return 0.0 if distance == 0.0 else math.inf
    return distance / spread


def js_distance(reference: ArrayLike, current: ArrayLike, bins: int = JS_BINS) -> float:
    """Jensen–Shannon distance (natural log) between the windows' histograms on shared bins.

    The ``bins`` equal-width bins span the range of both windows together
    (``numpy.histogram_bin_edges``); the distance is ``scipy.spatial.distance.jensenshannon``
    of the two bin proportions, in ``[0, sqrt(ln 2)]``. A range too narrow to hold ``bins``
    distinct float edges (e.g. ``0`` and ``5e-324``) gets as many bins as it can hold.
    """
    from scipy.spatial.distance import jensenshannon

    if bins < 1:
        raise ValueError(f"bins must be positive, got {bins}")
    ref, cur = _sample(reference, "reference"), _sample(current, "current")
    edges = shared_edges(np.concatenate([ref, cur]), bins)
    r = np.histogram(ref, edges)[0] / ref.size
    c = np.histogram(cur, edges)[0] / cur.size
    return float(jensenshannon(r, c))


@dataclass(frozen=True)
class StatTest:
    """One drift test (Evidently's ``StatTest``): a statistic of two windows and its default
    threshold.

    Attributes:
        name: the name :func:`drift_test` and alert rules take.
        func: ``(reference (n,), current (m,)) -> (statistic, p_value or None)`` on finite float
            samples; a test with a p-value drifts when ``p <= threshold``, any other when
            ``statistic >= threshold``.
        default_threshold: the bound used when the caller gives none.
    """

    name: str
    func: Callable[[np.ndarray, np.ndarray], tuple[float, float | None]]
    default_threshold: float


STAT_TESTS: dict[str, StatTest] = {}


def register_stat_test(
    name: str,
    func: Callable[[np.ndarray, np.ndarray], tuple[float, float | None]],
    default_threshold: float,
) -> StatTest:
    """Add a drift test to :data:`STAT_TESTS` (replacing one of the same name) and return it.

    Example::

        from scipy.stats import anderson_ksamp
        register_stat_test("anderson", lambda r, c: _anderson(r, c), 0.05)
        drift_test(reference, current, method="anderson")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")
    if not (isinstance(default_threshold, int | float) and default_threshold >= 0):
        raise ValueError(f"default_threshold must be a number >= 0, got {default_threshold!r}")
    test = StatTest(name, func, float(default_threshold))
    STAT_TESTS[name] = test
    return test


register_stat_test("psi", lambda ref, cur: (psi(ref, cur), None), 0.1)
register_stat_test("ks", ks, 0.05)
register_stat_test("wasserstein", lambda ref, cur: (wasserstein(ref, cur), None), 0.1)
register_stat_test("jensenshannon", lambda ref, cur: (js_distance(ref, cur), None), 0.1)


def default_method(reference_size: int) -> str:
    """Evidently-like choice: ``"ks"`` up to :data:`SMALL_REFERENCE` values, else Wasserstein."""
    return "ks" if reference_size <= SMALL_REFERENCE else "wasserstein"


def drift_test(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    signal: str = "value",
    method: str | None = None,
    threshold: float | None = None,
) -> DriftResult:
    """Test one signal for drift between a reference and a current 1-D sample.

    Args:
        reference: ``(n,)`` values of the reference window (NaN dropped).
        current: ``(m,)`` values of the current window (NaN dropped).
        signal: name carried into the result.
        method: a name in :data:`STAT_TESTS`; ``None`` picks :func:`default_method` by
            reference size.
        threshold: overrides the test's default threshold.
    """
    if method is not None and method not in STAT_TESTS:
        raise ValueError(f"method must be one of {sorted(STAT_TESTS)} or None, got {method!r}")
    if threshold is not None and not (isinstance(threshold, int | float) and threshold >= 0):
        raise ValueError(f"threshold must be a number >= 0 or None, got {threshold!r}")
    ref, cur = _sample(reference, "reference"), _sample(current, "current")
    method = method or default_method(ref.size)
    test = STAT_TESTS[method]
    bound = test.default_threshold if threshold is None else float(threshold)
    statistic, p_value = test.func(ref, cur)
    statistic = float(statistic)
    p_value = None if p_value is None else float(p_value)
    drifted = statistic >= bound if p_value is None else p_value <= bound
    return DriftResult(signal, method, statistic, bound, bool(drifted), p_value, ref.size, cur.size)


def drift_report(
    reference: Mapping[str, ArrayLike],
    current: Mapping[str, ArrayLike],
    *,
    method: str | None = None,
) -> DriftReport:
    """Test every signal of two windows with :func:`drift_test`; dataset drift by share.

    ``reference`` and ``current`` map signal names to 1-D samples and must name the same
    signals. A signal with no finite value in either window is listed in
    :attr:`DriftReport.skipped` instead of failing the whole report.
    """
    if set(reference) != set(current):
        raise ValueError(
            "reference and current must name the same signals, got "
            f"{sorted(reference)} and {sorted(current)}"
        )
    if not reference:
        raise ValueError("reference and current hold no signal")
    results, skipped = {}, {}
    for name in reference:
        ref = np.asarray(reference[name], dtype=np.float64)
        cur = np.asarray(current[name], dtype=np.float64)
        empty = [w for w, x in (("reference", ref), ("current", cur)) if np.isnan(x).all()]
        if empty:
            skipped[name] = f"no values in the {' and '.join(empty)} window"
            continue
        results[name] = drift_test(ref, cur, signal=name, method=method)
    share = sum(r.drifted for r in results.values()) / len(results) if results else 0.0
    return DriftReport(results, share, bool(results) and share >= DATASET_DRIFT_SHARE, skipped)


def __getattr__(name: str):
    return moved_name(__name__, name)
