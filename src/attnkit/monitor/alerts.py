"""Alert rules on monitored signals: thresholds and drift, with a cool-down against storms.

Rules come from a TOML file of ``[[rules]]`` tables (other top-level tables are ignored, so the
file may hold other settings)::

    [[rules]]
    name = "hallucination-rising"     # unique; names the alert
    signal = "detector_score"         # the signal the rule watches
    kind = "threshold"                # mean of the window's values `op` `value`
    op = ">"                          # one of >, >=, <, <=
    value = 0.5
    tags = { model = "llama-3-8b" }   # only windows with these tags (default: every window)
    window_s = 3600                   # length of the current window, for the caller that
                                      # selects the records (default 3600)
    cooldown_s = 900                  # a fired rule stays quiet this long (default 900)
    severity = "critical"             # info, warning (default) or critical

    [[rules]]
    name = "lookback-drift"
    signal = "lookback_ratio"
    kind = "drift"                    # attnkit.monitor.drift.drift_test(reference, current)
    method = "ks"                     # optional: a drift.STAT_TESTS name (default: by size)
    threshold = 0.01                  # optional: overrides the method's default threshold

An :class:`Alerter` evaluates the rules on windows of values that the caller selected (by time
and tags), logs every alert to the ``attnkit.monitor.alerts`` logger and, when a webhook URL is
set, POSTs it as JSON. Webhook failures (connection errors, timeouts, HTTP errors) are logged and
never raised; log lines name the webhook by scheme, host and port only, because the path, query
and user info of a webhook URL often hold its secret, and the bearer token is never logged.

Cool-down: once a rule fires for a set of tags it stays quiet for ``cooldown_s`` seconds, however
often it is evaluated; a condition that still holds after that fires again (a reminder every
``cooldown_s``, not an alert per evaluation).
"""

from __future__ import annotations

import logging
import math
import operator
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from attnkit.monitor.drift import STAT_TESTS, drift_test

__all__ = ["KINDS", "OPS", "SEVERITIES", "Alert", "Alerter", "Rule", "load_rules"]

logger = logging.getLogger(__name__)

KINDS = ("threshold", "drift")
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
SEVERITIES = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}
_DRIFT_ONLY = ("method", "threshold")
_THRESHOLD_ONLY = ("op", "value")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """One alert rule (see the module docstring for the file format)."""

    name: str  # unique name of the rule, carried by its alerts
    signal: str  # signal the rule watches, e.g. "lookback_ratio"
    kind: str  # "threshold" or "drift"
    op: str = ">"  # threshold rules: comparison of the window mean with `value`
    value: float = 0.0  # threshold rules: the bound
    method: str | None = None  # drift rules: a drift.STAT_TESTS name; None = by reference size
    threshold: float | None = None  # drift rules: None = the method's default threshold
    tags: dict[str, str] = field(default_factory=dict)  # only windows with these tags
    window_s: float = 3600.0  # length of the current window the caller selects
    cooldown_s: float = 900.0  # quiet time after the rule fired
    severity: str = "warning"  # "info", "warning" or "critical"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"rule name must be a non-empty string, got {self.name!r}")
        checks = [
            ("signal", isinstance(self.signal, str) and bool(self.signal), "a non-empty string"),
            ("kind", self.kind in KINDS, f"one of {KINDS}"),
            ("op", self.op in OPS, f"one of {tuple(OPS)}"),
            ("value", _is_number(self.value) and math.isfinite(self.value), "a finite number"),
            (
                "method",
                self.method is None or self.method in STAT_TESTS,
                f"one of {sorted(STAT_TESTS)}",
            ),
            (
                "threshold",
                self.threshold is None or (_is_number(self.threshold) and self.threshold >= 0),
                "a number >= 0",
            ),
            (
                "tags",
                isinstance(self.tags, Mapping)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in self.tags.items()),
                "a table of string values",
            ),
            ("window_s", _is_number(self.window_s) and self.window_s > 0, "a number > 0"),
            ("cooldown_s", _is_number(self.cooldown_s) and self.cooldown_s >= 0, "a number >= 0"),
            ("severity", self.severity in SEVERITIES, f"one of {tuple(SEVERITIES)}"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(
                    f"rule {self.name!r}: field {name!r} must be {expected}, "
                    f"got {getattr(self, name)!r}"
                )
        if self.kind == "threshold" and (self.method, self.threshold) != (None, None):
            raise ValueError(f"rule {self.name!r}: fields {_DRIFT_ONLY} apply to drift rules only")


def load_rules(path: str | Path) -> list[Rule]:
    """Rules from the ``[[rules]]`` tables of a TOML file.

    Raises ``ValueError`` naming the rule and the field for invalid TOML, a missing or unknown
    field, a wrong type or value, a field of the other kind of rule, or a repeated name.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: invalid TOML: {error}") from error
    tables = document.get("rules")
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{path}: expected one or more [[rules]] tables")
    known = set(Rule.__dataclass_fields__)
    rules = []
    for position, table in enumerate(tables, 1):
        label = repr(table.get("name", f"#{position}"))
        for required in ("name", "signal", "kind"):
            if required not in table:
                raise ValueError(f"{path}: rule {label}: missing field {required!r}")
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(
                f"{path}: rule {label}: unknown fields {unknown}; known: {sorted(known)}"
            )
        if table["kind"] == "threshold" and "value" not in table:
            raise ValueError(f"{path}: rule {label}: threshold rules need field 'value'")
        if table["kind"] == "drift" and any(key in table for key in _THRESHOLD_ONLY):
            raise ValueError(
                f"{path}: rule {label}: fields {_THRESHOLD_ONLY} apply to threshold rules only"
            )
        try:
            rules.append(Rule(**table))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    names = [rule.name for rule in rules]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}: rule names must be unique, repeated: {repeated}")
    return rules


@dataclass(frozen=True)
class Alert:
    """A fired rule."""

    rule: str  # name of the rule
    signal: str  # the signal it watches
    severity: str  # the rule's severity
    value: float  # threshold rules: the window mean; drift rules: the drift score
    message: str  # one line for people
    fired_at: float  # clock time (seconds since the epoch with the default clock)
    tags: dict[str, str] = field(default_factory=dict)  # tags of the evaluated window

    def payload(self) -> dict:
        """The webhook's JSON body: every field; a non-finite value becomes ``null``."""
        body = asdict(self)
        body["value"] = self.value if math.isfinite(self.value) else None
        return body


def _public_url(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what may be logged of it."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


class Alerter:
    """Evaluates rules on windows of signal values and fires alerts to the log and a webhook.

    Args:
        rules: the rules (e.g. from :func:`load_rules`); names must be unique.
        webhook_url: http(s) URL that receives each alert as a JSON POST; None: log only.
        webhook_token: sent as ``Authorization: Bearer <token>``; never logged.
        timeout_s: webhook timeout in seconds (connect and read), so a slow hook cannot stall
            evaluation for long.
        clock: returns the current time in seconds (injectable for tests).
        post: ``post(url, json=body, headers=..., timeout=...)`` returning a response with
            ``status_code``; default ``httpx.post``.
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        webhook_url: str | None = None,
        webhook_token: str | None = None,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        post: Callable[..., object] | None = None,
    ) -> None:
        self.rules = list(rules)
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rules must have unique names, got {names}")
        if webhook_url is not None:
            parts = urlsplit(webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("webhook_url must be an http:// or https:// URL with a host")
        if not (_is_number(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a number > 0, got {timeout_s!r}")
        self._url, self._token, self._timeout = webhook_url, webhook_token, float(timeout_s)
        self._clock, self._post = clock, post
        self._last_fired: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        hook = _public_url(self._url) if self._url else None
        return f"Alerter(rules={[rule.name for rule in self.rules]}, webhook={hook!r})"

    def evaluate(
        self,
        current: Mapping[str, np.ndarray],
        reference: Mapping[str, np.ndarray] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[Alert]:
        """Evaluate every rule that applies to ``tags`` and fire the alerts not in cool-down.

        Args:
            current: signal name → ``(n,)`` values of the current window (NaN ignored).
            reference: signal name → ``(m,)`` values of the reference window (drift rules).
            tags: the tags of both windows; a rule applies when its tags are among them.

        A rule whose signal is missing or empty in a window is skipped. Returns the fired alerts.
        """
        tags = dict(tags or {})
        key_tags = tuple(sorted(tags.items()))
        now = float(self._clock())
        fired = []
        for rule in self.rules:
            if any(tags.get(key) != value for key, value in rule.tags.items()):
                continue
            alert = self._check(rule, current, reference or {}, tags, now)
            if alert is None:
                continue
            with self._lock:
                last = self._last_fired.get((rule.name, key_tags))
                if last is not None and now - last < rule.cooldown_s:
                    logger.debug("alert %r in cool-down for %r", rule.name, tags)
                    continue
                self._last_fired[(rule.name, key_tags)] = now
            self._fire(alert)
            fired.append(alert)
        return fired

    def _check(
        self,
        rule: Rule,
        current: Mapping[str, np.ndarray],
        reference: Mapping[str, np.ndarray],
        tags: dict[str, str],
        now: float,
    ) -> Alert | None:
        if rule.signal not in current:
            return None
        values = np.asarray(current[rule.signal], dtype=np.float64).ravel()
        values = values[~np.isnan(values)]
        if values.size == 0:
            return None
        if rule.kind == "threshold":
            mean = float(values.mean())
            if not OPS[rule.op](mean, rule.value):
                return None
            message = (
                f"{rule.signal} mean {mean:.4g} {rule.op} {rule.value:g} over {values.size} values"
            )
            return Alert(rule.name, rule.signal, rule.severity, mean, message, now, tags)
        if rule.signal not in reference:
            return None
        try:
            result = drift_test(
                reference[rule.signal],
                values,
                signal=rule.signal,
                method=rule.method,
                threshold=rule.threshold,
            )
        except ValueError as error:
            logger.warning("drift rule %r not evaluated: %s", rule.name, error)
            return None
        if not result.drifted:
            return None
        message = (
            f"{rule.signal} drifted: {result.method} score {result.score:.4g} ({result.rule}), "
            f"{result.reference_size} reference vs {result.current_size} current values"
        )
        return Alert(rule.name, rule.signal, rule.severity, result.score, message, now, tags)

    def _fire(self, alert: Alert) -> None:
        logger.log(
            SEVERITIES[alert.severity],
            "alert %r (%s) tags=%r: %s",
            alert.rule,
            alert.severity,
            alert.tags,
            alert.message,
        )
        if self._url is None:
            return
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        hook = _public_url(self._url)
        try:
            post = self._post
            if post is None:
                import httpx

                post = httpx.post
            response = post(
                self._url,
                json=alert.payload(),
                headers=headers,
                timeout=self._timeout,
            )
        except Exception as error:  # a webhook must never break monitoring: log and go on
            logger.warning(
                "webhook %s failed for alert %r: %s", hook, alert.rule, type(error).__name__
            )
            return
        status = getattr(response, "status_code", None)
        if status is None or status >= 400:
            logger.warning("webhook %s answered HTTP %s for alert %r", hook, status, alert.rule)
