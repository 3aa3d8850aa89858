"""The REST API: auth, validation, size limits, storage round trips, drift, alerts, metrics."""

import json
import logging
import sqlite3
import time
from urllib.parse import quote

import pytest
from monitor_testing import AUTH, TOKEN, make_record

from attnkit.monitor.settings import Settings

NASTY = [
    "'; DROP TABLE records; --",
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "Robert'); DELETE FROM rollups WHERE ('1'='1",
    "\u202eevil\u00e9\u4e2d\U0001f600",
]


def trace_for(tokens, context):
    n = len(tokens)
    return {
        "tokens": tokens, "lookback_ratio": [0.9] * n, "entropy": [1.0] * n, "sink": [0.1] * n,
        "max_weight": [0.5] * n, "retrieval": [0.5] * n,
        "context": {"start": 3, "tokens": context, "truncated": False},
        "leaned_on": [[[0, 0.5]]] + [[] for _ in range(n - 1)],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/v1/records"), ("post", "/v1/records"), ("post", "/v1/records/batch"),
     ("get", "/v1/series"), ("get", "/v1/drift"), ("get", "/v1/alerts"),
     ("get", "/v1/records/x"), ("get", "/metrics")],
)  # fmt: skip
def test_every_route_needs_a_valid_token(client, method, path):
    body = {"json": make_record(0)} if method == "post" else {}
    missing = client.request(method, path, **body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    for header in ("Bearer wrong", "Bearer " + TOKEN + "x", "Basic " + TOKEN, TOKEN):
        refused = client.request(method, path, headers={"Authorization": header}, **body)
        assert refused.status_code == (401 if not header.startswith("Bearer") else 403)
    assert client.get("/v1/records", headers=AUTH).json()["records"] == []  # nothing stored


def test_both_configured_tokens_work_and_the_page_needs_none(client):
    assert client.get("/v1/records", headers={"Authorization": "Bearer second-token"}).is_success
    page = client.get("/")
    assert page.status_code == 200 and "attnkit monitor" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../server.py").status_code == 404


def test_tokens_never_reach_logs_or_repr(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.get("/v1/records", headers={"Authorization": "Bearer guessed-secret"})
    client.get("/v1/records", headers=AUTH)
    assert "guessed-secret" not in caplog.text and TOKEN not in caplog.text
    assert TOKEN not in repr(Settings(tokens=(TOKEN,)))


def test_ingest_is_idempotent_and_queryable(client):
    answer = client.post("/v1/records", json=make_record(0), headers=AUTH)
    assert answer.json() == {"inserted": 1, "duplicates": 0}
    batch = {"records": [make_record(i) for i in range(25)] + [make_record(3)]}
    assert client.post("/v1/records/batch", json=batch, headers=AUTH).json() == {
        "inserted": 24, "duplicates": 2,
    }  # fmt: skip
    seen, cursor = [], None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/records", params=params, headers=AUTH).json()
        seen += [r["request_id"] for r in page["records"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"req-{i}" for i in range(25))
    tagged = client.get("/v1/records", params={"tag": "route:qa", "model": "llama"}, headers=AUTH)
    assert len(tagged.json()["records"]) == 25
    assert client.get("/v1/records", params={"tag": "route:chat"}, headers=AUTH).json() == {
        "records": [], "next_cursor": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"request_id": "a", ', 422),  # malformed JSON
        (b"[1, 2, 3]", 422),
        (b"null", 422),
        (json.dumps(make_record(0, entropy="2.0")).encode(), 422),  # number as a string
        (json.dumps(make_record(0, prompt_tokens=1.5)).encode(), 422),
        (json.dumps(make_record(0, prompt_tokens=2**63)).encode(), 422),
        (json.dumps(make_record(0, tags={"k": 1})).encode(), 422),
        (json.dumps(make_record(0, tags=["a"])).encode(), 422),
        (json.dumps(make_record(0, request_id="")).encode(), 422),
        (json.dumps(make_record(0, request_id="x" * 129)).encode(), 422),
        (json.dumps(make_record(0, request_id="a\x00b")).encode(), 422),
        (json.dumps(make_record(0, colour="red")).encode(), 422),
        (json.dumps(make_record(0, time=-1)).encode(), 422),
        (json.dumps(make_record(0)).replace('"entropy": 2.0', '"entropy": NaN').encode(), 422),
        (json.dumps(make_record(0)).replace('"sink": 0.3', '"sink": Infinity').encode(), 422),
        (b'{"request_id": "\\ud800", "lookback_ratio": 1}', 422),  # lone surrogate
        (json.dumps(make_record(0, trace={"tokens": ["a"]})).encode(), 422),
        (json.dumps(make_record(0, trace=trace_for(["a", "b"], ["c"]) | {"sink": [1]})).encode(),
         422),
    ],
)  # fmt: skip
def test_bad_bodies_are_4xx_with_a_message_and_store_nothing(client, body, status):
    headers = {**AUTH, "content-type": "application/json"}
    answer = client.post("/v1/records", content=body, headers=headers)
    assert answer.status_code == status
    detail = answer.json()["detail"]
    assert detail and all(item["msg"] for item in detail)
    assert client.get("/v1/records", headers=AUTH).json()["records"] == []


def test_bad_queries_are_422(client):
    for params in ({"limit": 0}, {"limit": "many"}, {"cursor": "1; DROP"}, {"tag": "novalue"},
                   {"start": "yesterday"}, {"start": 10, "end": 5}):  # fmt: skip
        assert client.get("/v1/records", params=params, headers=AUTH).status_code == 422, params
    assert client.get("/v1/series", params={"start": 10, "end": 5}, headers=AUTH).status_code == 422
    assert client.get("/v1/series", params={"signal": "x"}, headers=AUTH).status_code == 422
    assert client.get("/v1/drift", params={"method": "t"}, headers=AUTH).status_code == 422
    assert client.get("/v1/records/nope", headers=AUTH).status_code == 404


def test_huge_payloads_are_413(client):
    big = {"records": [make_record(i, tags={"k": "v" * 400}) for i in range(200)]}
    answer = client.post("/v1/records/batch", json=big, headers=AUTH)
    assert answer.status_code == 413 and "larger than" in answer.json()["detail"]

    def chunks():  # no Content-Length: the limit is counted while reading
        for _ in range(100):
            yield b" " * 1024

    streamed = client.post("/v1/records", content=chunks(), headers={**AUTH,
                           "content-type": "application/json"})  # fmt: skip
    assert streamed.status_code == 413
    assert client.get("/v1/records", headers=AUTH).json()["records"] == []


def test_sql_and_html_strings_are_stored_verbatim(client):
    records = [
        make_record(i, request_id=text, model=text, tags={text: text, "x": text},
                    trace=trace_for([text, "ok"], [text]))
        for i, text in enumerate(NASTY)
    ]  # fmt: skip
    answer = client.post("/v1/records/batch", json={"records": records}, headers=AUTH)
    assert answer.json() == {"inserted": len(NASTY), "duplicates": 0}
    for text in [*NASTY, "a/b"]:
        if text == "a/b":  # ids may hold slashes
            client.post("/v1/records", json=make_record(9, request_id=text, model=text,
                        tags={text: text, "x": text}, trace=trace_for([text, "ok"], [text])),
                        headers=AUTH)  # fmt: skip
        stored = client.get("/v1/records/" + quote(text, safe=""), headers=AUTH).json()
        assert stored["model"] == text and stored["tags"] == {text: text, "x": text}
        assert stored["trace"]["tokens"][0] == text and stored["trace"]["context"]["tokens"] == [
            text
        ]
    listed = client.get("/v1/records", params={"limit": 100}, headers=AUTH).json()["records"]
    assert sorted(r["request_id"] for r in listed) == sorted([*NASTY, "a/b"])
    for text in NASTY:  # tag filters with quotes are parameters, not SQL
        found = client.get("/v1/records", params={"tag": f"x:{text}"}, headers=AUTH).json()
        assert [r["request_id"] for r in found["records"]] == [text]
    assert client.get("/v1/records/a%2Fc", headers=AUTH).status_code == 404


def test_series_and_groups(client):
    now = time.time()
    start = now - now % 600 - 1200
    records = [
        make_record(i, time=start + 60 * i, version=f"v{i % 2}", entropy=float(i))
        for i in range(20)
    ]
    client.post("/v1/records/batch", json={"records": records}, headers=AUTH)
    params = {"signal": "entropy", "start": start, "end": start + 1200, "bucket_s": 600,
              "by": "version"}  # fmt: skip
    series = client.get("/v1/series", params=params, headers=AUTH).json()
    got = {
        (p["bucket"] - int(start), p["group"]): (p["count"], p["mean"]) for p in series["points"]
    }
    assert got == {(0, "v0"): (5, 4.0), (0, "v1"): (5, 5.0), (600, "v0"): (5, 14.0),
                   (600, "v1"): (5, 15.0)}  # fmt: skip
    assert client.get("/v1/groups", headers=AUTH).json() == [
        {"model": "llama", "version": "v0"}, {"model": "llama", "version": "v1"},
    ]  # fmt: skip


def test_drift_flags_a_shifted_version_only(client):
    import numpy as np

    rng = np.random.default_rng(0)
    now = time.time()
    records = []
    for k, (version, shift) in enumerate((("stable", 0.0), ("shifted", 0.3))):
        for i in range(300):
            current = i % 2 == 1  # odd records in the last day, even ones 3 days ago
            lr = min(rng.normal(0.6 + (shift if current else 0.0), 0.05), 1.0)  # a ratio
            records.append(make_record(
                1000 * k + i, version=version, lookback_ratio=float(lr),
                time=now - (3600 if current else 3 * 86400) - i,
                entropy=float(rng.normal(2, 0.1)),
            ))  # fmt: skip
    for i in range(0, len(records), 100):  # under the 64 KiB body limit of the test client
        answer = client.post("/v1/records/batch", json={"records": records[i : i + 100]},
                             headers=AUTH)  # fmt: skip
        assert answer.json()["inserted"] == 100
    drift = client.get("/v1/drift", params={"by": "version"}, headers=AUTH).json()
    groups = {g["group"]: g for g in drift["groups"]}
    assert groups["shifted"]["signals"]["lookback_ratio"]["drifted"] is True
    assert groups["stable"]["signals"]["lookback_ratio"]["drifted"] is False
    assert groups["shifted"]["signals"]["entropy"]["drifted"] is False
    assert groups["shifted"]["signals"]["lookback_ratio"]["method"] == "ks"  # 150 reference values
    assert "detector_score" in groups["stable"]["skipped"]


def test_alert_rules_fire_are_stored_and_cool_down(tmp_path):
    from fastapi.testclient import TestClient

    from attnkit.monitor.server import create_app

    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "low-lookback"\nsignal = "lookback_ratio"\nkind = "threshold"\n'
        'op = "<"\nvalue = 0.5\ntags = { model = "llama" }\nseverity = "critical"\n\n'
        '[[rules]]\nname = "other-model"\nsignal = "lookback_ratio"\nkind = "threshold"\n'
        'op = "<"\nvalue = 0.5\ntags = { model = "mistral" }\n'
    )
    settings = Settings(db=f"sqlite:///{tmp_path / 'a.db'}", tokens=(TOKEN,), rules=rules)
    with TestClient(create_app(settings)) as client:
        low = [make_record(i, lookback_ratio=0.2, time=time.time() - 10) for i in range(5)]
        client.post("/v1/records/batch", json={"records": low}, headers=AUTH)
        assert client.post("/v1/alerts/evaluate", headers=AUTH).json() == {"fired": 1}
        assert client.post("/v1/alerts/evaluate", headers=AUTH).json() == {"fired": 0}  # cool-down
        alerts = client.get("/v1/alerts", headers=AUTH).json()
        assert alerts["rules"] == ["low-lookback", "other-model"]
        [alert] = alerts["alerts"]
        assert alert["rule"] == "low-lookback" and alert["severity"] == "critical"
        assert alert["value"] == pytest.approx(0.2)
        metrics = client.get("/metrics", headers=AUTH).text
        assert 'attnkit_alerts_fired_total{rule="low-lookback",severity="critical"} 1.0' in metrics


def test_metrics_count_ingest_and_requests(client):
    client.post("/v1/records/batch", json={"records": [make_record(i) for i in range(4)]},
                headers=AUTH)  # fmt: skip
    client.post("/v1/records", json=make_record(0), headers=AUTH)
    metrics = client.get("/metrics", headers=AUTH).text
    assert "attnkit_records_ingested_total 4.0" in metrics
    assert "attnkit_records_duplicate_total 1.0" in metrics
    assert 'route="/v1/records/batch",status="200"' in metrics


def test_openapi_schema_is_published(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/records", "/v1/records/batch", "/v1/series", "/v1/drift", "/v1/alerts"} <= set(
        schema["paths"]
    )
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_the_service_applies_retention(tmp_path):
    from fastapi.testclient import TestClient

    from attnkit.monitor.server import create_app
    from attnkit.monitor.store import Store

    url = f"sqlite:///{tmp_path / 'retention.db'}"
    store = Store(url)
    store.upgrade()
    store.insert([make_record(0, time=time.time() - 3 * 86400), make_record(1)])
    settings = Settings(db=url, alert_interval_s=0.05, retention_days=2)
    with TestClient(create_app(settings)):
        deadline = time.monotonic() + 10
        while store.count() == 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert [r["request_id"] for r in store.records()[0]] == ["req-1"]
    store.close()


def test_settings_from_the_environment(tmp_path):
    environ = {
        "ATTNKIT_DB": "sqlite:///x.db", "ATTNKIT_TOKENS": " a, b ,,",
        "ATTNKIT_RETENTION_DAYS": "30", "ATTNKIT_RULES": str(tmp_path / "r.toml"),
    }  # fmt: skip
    settings = Settings.from_env(environ, db="sqlite:///y.db", tokens=None)
    assert settings.db == "sqlite:///y.db" and settings.tokens == ("a", "b")
    assert settings.retention_days == 30.0 and settings.rules == tmp_path / "r.toml"
    assert Settings.from_env({}).tokens == ()
    with pytest.raises(TypeError, match="tuple"):
        Settings(tokens="abc")
    with pytest.raises(ValueError, match="max_body_bytes"):
        Settings(max_body_bytes=10)


def test_a_database_that_goes_away_is_503_not_500(tmp_path):
    from fastapi.testclient import TestClient

    from attnkit.monitor.server import create_app

    path = tmp_path / "gone.db"
    with TestClient(create_app(Settings(db=f"sqlite:///{path}"))) as client:
        assert client.post("/v1/records", json=make_record(0)).status_code == 200
        with sqlite3.connect(path) as connection:  # someone drops the table under the service
            connection.execute("DROP TABLE records")
        answer = client.post("/v1/records", json=make_record(1))
        assert answer.status_code == 503 and "database" in answer.json()["detail"]
        assert client.get("/v1/records").status_code == 503
        assert client.get("/docs").status_code == 404  # no CDN-backed docs page


def test_drift_takes_any_registered_stat_test(client, monkeypatch):
    from attnkit.monitor import drift

    test = drift.StatTest("always", lambda reference, current: (1.0, None), 0.5)
    monkeypatch.setitem(drift.STAT_TESTS, "always", test)  # registered after the app was built
    assert client.get("/v1/drift", params={"method": "always"}, headers=AUTH).status_code == 200
    refused = client.get("/v1/drift", params={"method": "t"}, headers=AUTH)
    assert refused.status_code == 422 and "always" in refused.text and "ks" in refused.text
