"""The attacks of issue 16, kept: each one failed on the service before (figures in the
comments), on SQLite and PostgreSQL where a database is involved. Loopback only, bounded loops.
"""

import asyncio
import json
import socket
import time

import pytest
from monitor_testing import AUTH, TOKEN, InProcessServer, make_record
from sqlalchemy import event

from attnkit.monitor.settings import Settings


@pytest.fixture
def api(store_url):
    """The service on an empty database of each kind, behind a token, in-process."""
    from fastapi.testclient import TestClient

    from attnkit.monitor.server import create_app

    app = create_app(Settings(db=store_url, tokens=(TOKEN,)))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def live(tmp_path):
    """``live(**settings) -> InProcessServer``; stopped at the end."""
    from attnkit.monitor.server import create_app

    started = []

    def start(**options):
        settings = Settings(db=f"sqlite:///{tmp_path / f'live{len(started)}.db'}", **options)
        started.append(InProcessServer(create_app(settings)))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def metric_series(text, name):
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_metrics_labels_come_from_a_closed_set(api):
    # before: 20,000 unauthenticated requests with made-up methods grew /metrics 21 KB -> 44.6 MB
    methods = [f"M{i:04d}" for i in range(300)] + ["get", "PROPFIND", "BREW"]
    for i, method in enumerate(methods):
        api.request(method, f"/v1/made-up-{i}")
    api.request("GET", "/nowhere")
    text = api.get("/metrics", headers=AUTH).text
    requests = metric_series(text, "attnkit_http_requests_total")
    labels = [dict(part.split("=") for part in line[line.index("{") + 1 : line.index("}")]
                   .split(",")) for line in requests]  # fmt: skip
    assert {label["method"] for label in labels} <= {'"GET"', '"POST"', '"other"'}
    assert {label["route"] for label in labels} <= {'"other"', '"/metrics"'}
    assert len(requests) <= 6 and len(text) < 30_000


NUL_REQUESTS = [
    "/v1/records/%00",
    "/v1/records/a%00b",
    "/v1/records?model=%00",
    "/v1/records?version=x%00",
    "/v1/records?tag=k:%00",
    "/v1/records?tag=%00:v",
    "/v1/series?model=%00",
    "/v1/drift?by=model&model=%00",
]


@pytest.mark.parametrize("path", NUL_REQUESTS)
def test_nul_in_paths_and_queries_is_422_on_both_databases(api, path):
    # before: 500 on PostgreSQL ("A string literal cannot contain NUL (0x00) characters")
    answer = api.get(path, headers=AUTH)
    assert answer.status_code == 422 and "NUL" in answer.json()["detail"]


@pytest.mark.parametrize(
    "fields",
    [{"lookback_ratio": 1.7e308}, {"lookback_ratio": -1.7e308}, {"lookback_ratio": 1.0000001},
     {"entropy": -0.1}, {"entropy": 1e300}, {"sink": 2.0}, {"max_weight": -1e-9},
     {"detector_score": 1.5}, {"prompt_tokens": -1}, {"new_tokens": 2**31}],
)  # fmt: skip
def test_impossible_values_are_refused_on_both_databases(api, fields):
    # before: a lookback ratio of ±1.7e308 or a negative entropy was stored (and broke reports)
    answer = api.post("/v1/records", json=make_record(0, **fields), headers=AUTH)
    assert answer.status_code == 422
    assert next(iter(fields)) in json.dumps(answer.json())
    assert api.get("/v1/records", params={"start": 0}, headers=AUTH).json()["records"] == []


def trace(tokens, leaned):
    return {
        "tokens": ["a"] * tokens, "lookback_ratio": [0.5] * tokens, "entropy": [1.0] * tokens,
        "sink": [0.1] * tokens, "max_weight": [0.2] * tokens, "retrieval": [0.5] * tokens,
        "context": {"start": 0, "tokens": ["c"] * 100, "truncated": False},
        "leaned_on": [[[i % 100, 0.5] for i in range(leaned)]] + [[]] * (tokens - 1),
    }  # fmt: skip


def test_per_token_lists_are_bounded_and_shares_in_range(api):
    # before: one answer token could name any number of context positions (an 8 MB record of
    # them stalled every other request for 2.2 s)
    ok = api.post("/v1/records", json=make_record(1, trace=trace(4, 32)), headers=AUTH)
    assert ok.status_code == 200
    long = api.post("/v1/records", json=make_record(2, trace=trace(4, 33)), headers=AUTH)
    assert long.status_code == 422 and "leaned_on" in long.text
    wrong = trace(4, 1)
    wrong["leaned_on"][0] = [[0, 1.5]]
    assert (
        api.post("/v1/records", json=make_record(3, trace=wrong), headers=AUTH).status_code == 422
    )


def test_big_bodies_are_checked_off_the_event_loop(tmp_path, monkeypatch):
    # before: validation ran on the event loop, blocking every other request meanwhile
    from fastapi.testclient import TestClient

    from attnkit.monitor import schemas
    from attnkit.monitor.server import create_app

    seen = []
    original = schemas.BatchIn.model_validate_json.__func__

    def spy(cls, data, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            seen.append("event loop")
        except RuntimeError:
            seen.append("worker thread")
        return original(cls, data, *args, **kwargs)

    monkeypatch.setattr(schemas.BatchIn, "model_validate_json", classmethod(spy))
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'big.db'}"))
    records = [make_record(i, trace=trace(200, 1)) for i in range(60)]  # ~200 KB
    with TestClient(app) as client:
        answer = client.post("/v1/records/batch", json={"records": records})
    assert answer.json() == {"inserted": 60, "duplicates": 0}
    assert seen == ["worker thread"]


def test_a_body_that_does_not_arrive_is_cut_off(live):
    # before: no timeout: 40 connections each announcing 8 MB held 346 MB for 20 s and more
    server = live(body_timeout_s=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = b"POST /v1/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
        sock.sendall(head + b"Content-Type: application/json\r\n\r\n" + b'{"request_id"')
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 408") and "not received within 0.3 s" in answer


def test_the_host_header_must_name_the_server(live):
    # before: any Host was served, so a no-token loopback service was open to DNS rebinding
    import httpx

    server = live(allowed_hosts=("monitor.internal",))
    for host, status in [("evil.example", 400), ("127.0.0.1.evil.example", 400),
                         (f"localhost:{server.port}", 200), ("127.0.0.1", 200),
                         ("[::1]:8000", 200), ("monitor.internal:443", 200)]:  # fmt: skip
        answer = httpx.get(server.url + "/v1/groups", headers={"Host": host})
        assert answer.status_code == status, host
        if status == 400:
            assert "untrusted Host" in answer.json()["detail"]
    assert httpx.get(server.url + "/", headers={"Host": "evil.example"}).status_code == 400


def test_validation_errors_never_echo_the_input(api):
    # before: a 7.3 MB request of bad records got a 7.34 MB answer (the input echoed back)
    key = "k" * 7000
    records = [make_record(i, tags={key: "v"}) for i in range(1000)]  # ~7 MB of keys
    body = json.dumps({"records": records})
    answer = api.post("/v1/records/batch", content=body, headers={**AUTH,
                      "Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 422
    assert len(body) > 7_000_000 and len(answer.content) < 10_000


def test_a_full_disk_is_507_and_nothing_is_half_stored(tmp_path):
    # before: a generic 503 "the database is unavailable"
    from fastapi.testclient import TestClient

    from attnkit.monitor.server import create_app

    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'full.db'}"))
    store = app.state.store
    with TestClient(app) as client:
        assert client.post("/v1/records", json=make_record(0)).status_code == 200
        pages = store.writer.connect().exec_driver_sql("PRAGMA page_count").scalar()

        @event.listens_for(store.writer, "connect")
        def limit(dbapi_connection, _record):  # the file may not grow any more
            dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

        store.writer.dispose()
        records = [make_record(i, tags={"pad": "x" * 400}) for i in range(1, 2001)]
        answer = client.post("/v1/records/batch", json={"records": records[:100]})
        for start in range(100, 2000, 100):
            if answer.status_code != 200:
                break
            answer = client.post(
                "/v1/records/batch", json={"records": records[start : start + 100]}
            )
        assert answer.status_code == 507 and "disk is full" in answer.json()["detail"]
    assert store.count() % 100 == 1  # whole batches or nothing


def test_tokens_outside_what_a_header_carries_are_refused():
    # before: a non-ASCII token was accepted by the service and could never authenticate
    with pytest.raises(ValueError, match="RFC 6750"):
        Settings(tokens=("tökén",))
    with pytest.raises(ValueError, match="ATTNKIT_RETENTION_DAYS must be a number"):
        Settings.from_env({"ATTNKIT_RETENTION_DAYS": "soon"})


def test_tag_filters_match_any_key_on_both_databases(store):
    # before: on SQLite a key with ", \ or a non-ASCII letter never matched (PostgreSQL did)
    keys = ['a"b', "a\\b", "ü", "x.y", "$", "a'b", "[0]", "中文", "*"]
    store.insert([make_record(i, tags={key: f"v{i}"}) for i, key in enumerate(keys)])
    for i, key in enumerate(keys):
        rows, _ = store.records(tags={key: f"v{i}"}, start=0)
        assert [r["request_id"] for r in rows] == [f"req-{i}"], key
        assert store.records(tags={key: "other"}, start=0)[0] == []


def test_drift_by_group_reads_a_bounded_number_of_groups(tmp_path):
    # before: drift?by=model read every group any writer ever created (6.1 s at 3,010)
    from fastapi.testclient import TestClient

    from attnkit.monitor.server import create_app

    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'groups.db'}", max_drift_groups=3))
    now = time.time()
    records = [make_record(i, model=f"m{i % 10}", time=now - 600 - i) for i in range(10 * 12)]
    records += [make_record(1000 + i, model="busy", time=now - 600 - i) for i in range(50)]
    with TestClient(app) as client:
        client.post("/v1/records/batch", json={"records": records})
        drift = client.get("/v1/drift", params={"by": "model"}).json()
    assert drift["groups_truncated"] is True and len(drift["groups"]) == 3
    assert "busy" in {g["group"] for g in drift["groups"]}  # the busiest groups come first


@pytest.mark.parametrize(
    ("reference", "current"),
    [([0.3] * 30, [0.30000000000000004] * 30), ([1.7e308, -1.7e308, 0.0] * 10, [1.7e308] * 30),
     ([0.5] * 30, [0.5] * 30), ([5e-324, 0.0] * 15, [0.0] * 30)],
)  # fmt: skip
def test_drift_and_reports_on_constant_narrow_and_extreme_windows(reference, current):
    # before: "Too many bins for data range" from the report, and a normalized Wasserstein of
    # 0.0 between windows at the float limit (the reference's std overflowed to inf)
    import numpy as np

    from attnkit.monitor.drift import STAT_TESTS, drift_report, wasserstein
    from attnkit.monitor.report import render_drift_report

    for method in STAT_TESTS:
        report = drift_report({"x": reference}, {"x": current}, method=method)
        assert not np.isnan(report.results["x"].statistic)
    page = render_drift_report(drift_report({"x": reference}, {"x": current}),
                               {"x": reference}, {"x": current})  # fmt: skip
    assert page.count("<svg") == 1 and "<rect" in page
    same = reference == current
    assert (wasserstein(reference, current) == 0.0) == same
    if reference[0] == 1.7e308:  # moving a third of the mass across the range: 2/3 of it
        scaled = np.array(reference) / 1.7e308
        expected = np.mean(np.abs(np.sort(scaled) - 1.0)) / np.std(scaled)
        assert wasserstein(reference, current) == pytest.approx(expected)
