"""Alert rules: the TOML file format, verdicts, tag filters, cool-down, log and webhook."""

import http.server
import json
import logging
import socket
import textwrap
import threading
from typing import ClassVar

import numpy as np
import pytest

from attnkit.monitor import alerts
from attnkit.monitor.alerts import Alert, Alerter, Rule, load_rules
from attnkit.monitor.drift import drift_test

SECRET_PATH = "/hooks/T0SECRETPATH"
TOKEN = "tok-SECRET-123"


class Clock:
    """A settable clock."""

    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


class Recorder:
    """A fake ``post`` that records its calls and answers with a status code."""

    def __init__(self, status=200):
        self.calls, self.status = [], status

    def __call__(self, url, **kwargs):
        self.calls.append((url, kwargs))
        return type("Response", (), {"status_code": self.status})()


def _write(tmp_path, text):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


# --- the rule file ------------------------------------------------------------------------------


def test_module_docstring_example_loads(tmp_path):
    example = alerts.__doc__.split("::\n", 1)[1].split("\nAn :class:")[0]
    rules = load_rules(_write(tmp_path, textwrap.dedent(example)))
    assert rules == [
        Rule(
            name="hallucination-rising",
            signal="detector_score",
            kind="threshold",
            op=">",
            value=0.5,
            tags={"model": "llama-3-8b"},
            window_s=3600,
            cooldown_s=900,
            severity="critical",
        ),
        Rule(
            name="lookback-drift",
            signal="lookback_ratio",
            kind="drift",
            method="ks",
            threshold=0.01,
        ),
    ]


def test_other_top_level_tables_are_ignored(tmp_path):
    path = _write(
        tmp_path,
        '[server]\nport = 8000\n[[rules]]\nname = "a"\nsignal = "entropy"\nkind = "drift"\n',
    )
    assert load_rules(path) == [Rule("a", "entropy", "drift")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rules]\nname = 1", "invalid TOML"),
        ("[server]\nport = 1\n", r"expected one or more \[\[rules\]\] tables"),
        ('[[rule]]\nname = "r1"\nsignal = "e"\nkind = "drift"\n', r"one or more \[\[rules\]\]"),
        ('[[rules]]\nname = "r1"\nkind = "drift"\n', "rule 'r1': missing field 'signal'"),
        ('[[rules]]\nsignal = "e"\nkind = "drift"\n', "rule '#1': missing field 'name'"),
    ],
)
def test_rule_file_structure_errors(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as error:
        load_rules(path)
    assert str(path) in str(error.value)


FIELD_ERRORS = [
    ('kind = "drift"\ncooldown = 5', r"unknown fields \['cooldown'\]"),
    ('kind = "spike"', "field 'kind' must be one of"),
    ('kind = "threshold"\nop = "=>"\nvalue = 1', "field 'op' must be one of"),
    ('kind = "threshold"\nvalue = "high"', "field 'value' must be a finite number"),
    ('kind = "threshold"', "threshold rules need field 'value'"),
    ('kind = "drift"\nvalue = 0.2', "fields .* apply to threshold rules only"),
    ('kind = "threshold"\nvalue = 1\nmethod = "ks"', "fields .* apply to drift rules only"),
    ('kind = "drift"\nmethod = "chi2"', "field 'method' must be one of"),
    ('kind = "drift"\nthreshold = -1', "field 'threshold' must be a number >= 0"),
    ('kind = "drift"\nseverity = "fatal"', "field 'severity' must be one of"),
    ('kind = "drift"\ncooldown_s = -5', "field 'cooldown_s' must be a number >= 0"),
    ('kind = "drift"\nwindow_s = 0', "field 'window_s' must be a number > 0"),
    ('kind = "drift"\ntags = { model = 3 }', "field 'tags' must be a table of string"),
    (
        'kind = "drift"\n[[rules]]\nname = "r1"\nsignal = "e"\nkind = "drift"',
        "repeated: \\['r1'\\]",
    ),
]


@pytest.mark.parametrize(("fields", "message"), FIELD_ERRORS)
def test_rule_file_errors_name_the_rule_and_field(tmp_path, fields, message):
    path = _write(tmp_path, f'[[rules]]\nname = "r1"\nsignal = "entropy"\n{fields}\n')
    with pytest.raises(ValueError, match=message) as error:
        load_rules(path)
    assert str(error.value).startswith(f"{path}: ") and "'r1'" in str(error.value)


# --- evaluation ---------------------------------------------------------------------------------


def test_threshold_rules_compare_the_window_mean():
    rules = [
        Rule("gt", "score", "threshold", op=">", value=0.5),
        Rule("ge", "score", "threshold", op=">=", value=0.5),
        Rule("lt", "lookback_ratio", "threshold", op="<", value=0.3, severity="critical"),
    ]
    fired = Alerter(rules).evaluate({"score": [0.4, 0.6, np.nan], "lookback_ratio": [0.2, 0.3]})
    assert [a.rule for a in fired] == ["ge", "lt"]  # mean 0.5: not > 0.5, but >= 0.5
    assert fired[0].value == pytest.approx(0.5) and fired[1].value == pytest.approx(0.25)
    assert fired[1].severity == "critical" and fired[1].signal == "lookback_ratio"
    assert fired[1].message == "lookback_ratio mean 0.25 < 0.3 over 2 values"
    assert Alerter(rules).evaluate({"score": [0.1], "lookback_ratio": [0.9]}) == []


def test_missing_or_empty_signals_are_skipped():
    rule = Rule("gt", "score", "threshold", value=0.0)
    assert Alerter([rule]).evaluate({}) == []
    assert Alerter([rule]).evaluate({"score": [np.nan]}) == []
    assert Alerter([rule]).evaluate({"score": []}) == []


def test_drift_rules():
    rng = np.random.default_rng(0)
    reference, same, moved = rng.normal(0, 1, 400), rng.normal(0, 1, 400), rng.normal(0.5, 1, 400)
    alerter = Alerter([Rule("drift", "entropy", "drift", cooldown_s=0)])
    assert alerter.evaluate({"entropy": same}, {"entropy": reference}) == []
    assert alerter.evaluate({"entropy": moved}) == []  # no reference: skipped
    (alert,) = alerter.evaluate({"entropy": moved}, {"entropy": reference})
    expected = drift_test(reference, moved, method="ks")
    assert alert.value == expected.p_value and alert.rule == "drift"
    assert alert.message.startswith(f"entropy drifted: ks score {expected.p_value:.4g} (p <= 0.05)")
    strict = Alerter([Rule("d", "entropy", "drift", method="psi", threshold=10.0)])
    assert strict.evaluate({"entropy": moved}, {"entropy": reference}) == []


def test_tag_filters():
    rule = Rule("llama", "score", "threshold", value=0.5, tags={"model": "llama"})
    alerter = Alerter([rule], clock=Clock())
    assert alerter.evaluate({"score": [0.9]}) == []
    assert alerter.evaluate({"score": [0.9]}, tags={"model": "qwen"}) == []
    (alert,) = alerter.evaluate({"score": [0.9]}, tags={"model": "llama", "version": "2"})
    assert alert.tags == {"model": "llama", "version": "2"}


def test_cooldown_stops_storms_per_rule_and_tags():
    clock = Clock(1000.0)
    alerter = Alerter([Rule("high", "score", "threshold", value=0.5, cooldown_s=900)], clock=clock)
    window, v1, v2 = {"score": [0.9]}, {"version": "1"}, {"version": "2"}
    assert [a.fired_at for a in alerter.evaluate(window, tags=v1)] == [1000.0]
    for now in (1000.0, 1100.0, 1899.9):
        clock.now = now
        assert alerter.evaluate(window, tags=v1) == []
    assert len(alerter.evaluate(window, tags=v2)) == 1  # another tag set has its own cool-down
    clock.now = 1900.0
    assert [a.fired_at for a in alerter.evaluate(window, tags=v1)] == [1900.0]
    clock.now = 2000.0
    assert alerter.evaluate({"score": [0.1]}, tags=v1) == []  # calm, and still cooling down
    clock.now = 2800.0
    assert len(alerter.evaluate(window, tags=v1)) == 1


def test_alerts_are_logged_at_their_severity(caplog):
    rules = [
        Rule("a", "score", "threshold", value=0.0, severity="info"),
        Rule("b", "score", "threshold", value=0.0, severity="critical"),
    ]
    with caplog.at_level(logging.INFO, logger="attnkit.monitor.alerts"):
        Alerter(rules).evaluate({"score": [1.0]}, tags={"model": "<m>"})
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.CRITICAL]
    assert "alert 'a' (info) tags={'model': '<m>'}: score mean 1 > 0 over 1 values" in caplog.text


# --- webhook ------------------------------------------------------------------------------------


def test_webhook_receives_the_alert_as_json():
    post = Recorder()
    url = "https://hooks.example.com" + SECRET_PATH
    alerter = Alerter(
        [Rule("high", "score", "threshold", value=0.5)],
        webhook_url=url,
        webhook_token=TOKEN,
        timeout_s=2.5,
        clock=Clock(42.0),
        post=post,
    )
    (alert,) = alerter.evaluate({"score": [1.0, 0.8]}, tags={"model": "m"})
    ((called_url, kwargs),) = post.calls
    assert called_url == url
    assert kwargs == {
        "json": {
            "rule": "high",
            "signal": "score",
            "severity": "warning",
            "value": 0.9,
            "message": "score mean 0.9 > 0.5 over 2 values",
            "fired_at": 42.0,
            "tags": {"model": "m"},
        },
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "timeout": 2.5,
    }
    assert kwargs["json"] == alert.payload()
    assert TOKEN not in repr(alerter) and SECRET_PATH not in repr(alerter)


def test_non_finite_values_are_null_in_the_payload():
    post = Recorder()
    alerter = Alerter(
        [Rule("d", "sink", "drift", method="wasserstein")],
        webhook_url="http://127.0.0.1:9/hook",
        post=post,
    )
    (alert,) = alerter.evaluate({"sink": np.full(20, 2.0)}, {"sink": np.ones(20)})
    assert alert.value == np.inf and post.calls[0][1]["json"]["value"] is None


def _raise(*args, **kwargs):
    raise RuntimeError(f"boom {SECRET_PATH} {TOKEN}")


@pytest.mark.parametrize(
    ("post", "logged"), [(_raise, "failed"), (Recorder(503), "answered HTTP 503")]
)
def test_webhook_failures_are_logged_not_raised_and_secrets_stay_out(caplog, post, logged):
    alerter = Alerter(
        [Rule("high", "score", "threshold", value=0.5)],
        webhook_url=f"https://user:PWSECRET@hooks.example.com:8443{SECRET_PATH}?key=QSECRET",
        webhook_token=TOKEN,
        post=post,
    )
    with caplog.at_level(logging.DEBUG):
        assert len(alerter.evaluate({"score": [1.0]})) == 1
    assert f"webhook https://hooks.example.com:8443 {logged}" in caplog.text
    for secret in (SECRET_PATH, TOKEN, "QSECRET", "PWSECRET"):
        assert secret not in caplog.text


def test_bad_webhook_url_is_rejected_without_echoing_it():
    with pytest.raises(ValueError, match="webhook_url must be an http") as error:
        Alerter([], webhook_url="ftp://hooks.example.com" + SECRET_PATH)
    assert SECRET_PATH not in str(error.value)
    with pytest.raises(ValueError, match="unique names"):
        Alerter([Rule("a", "s", "drift"), Rule("a", "t", "drift")])


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list] = []
    release: ClassVar[threading.Event | None] = None

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, dict(self.headers), json.loads(body)))
        if self.release is not None:
            self.release.wait(5)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_server():
    _Hook.received, _Hook.release = [], None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    if _Hook.release is not None:
        _Hook.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_webhook_against_a_real_local_server(hook_server):
    alerter = Alerter(
        [Rule("high", "score", "threshold", value=0.5, severity="critical")],
        webhook_url=hook_server + SECRET_PATH,
        webhook_token=TOKEN,
        clock=Clock(7.0),
    )
    (alert,) = alerter.evaluate({"score": [0.75]}, tags={"model": "<script>"})
    ((path, headers, body),) = _Hook.received
    assert path == SECRET_PATH
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    assert body == alert.payload()
    assert body["tags"] == {"model": "<script>"} and body["value"] == 0.75


def test_webhook_timeout_and_refused_connection_are_logged(hook_server, caplog):
    _Hook.release = threading.Event()  # the server holds the request past the timeout
    rule = Rule("high", "score", "threshold", value=0.5)
    slow = Alerter([rule], webhook_url=hook_server + SECRET_PATH, timeout_s=0.2)
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    refused = Alerter([rule], webhook_url=closed + SECRET_PATH, timeout_s=2.0)
    with caplog.at_level(logging.WARNING, logger="attnkit.monitor.alerts"):
        assert len(slow.evaluate({"score": [1.0]})) == 1
        assert len(refused.evaluate({"score": [1.0]})) == 1
    assert f"webhook {hook_server} failed for alert 'high': ReadTimeout" in caplog.text
    assert f"webhook {closed} failed for alert 'high': ConnectError" in caplog.text
    assert SECRET_PATH not in caplog.text


def test_alert_payload_fields():
    alert = Alert("r", "s", "info", 1.5, "m", 3.0, {"k": "v"})
    assert json.loads(json.dumps(alert.payload())) == {
        "rule": "r",
        "signal": "s",
        "severity": "info",
        "value": 1.5,
        "message": "m",
        "fired_at": 3.0,
        "tags": {"k": "v"},
    }
