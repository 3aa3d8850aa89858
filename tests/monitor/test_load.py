"""Concurrent writers over HTTP on loopback, and a server killed (SIGKILL) in the middle."""

import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from monitor_testing import AUTH, make_record
from sqlalchemy import text

from attnkit.monitor.store import Store

WRITERS, PER_WRITER = 8, 500


def writer(url, worker, count, acknowledged, failures, stop=None):
    """POST ``count`` single records; note each acknowledged id and every failure."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        for i in range(count):
            if stop is not None and stop.is_set():
                return
            request_id = f"w{worker}-{i}"
            try:
                answer = client.post("/v1/records", json=make_record(i, request_id=request_id))
            except httpx.TransportError as error:
                failures.append(repr(error))
                return
            if answer.status_code == 200:
                acknowledged.append(request_id)
            else:
                failures.append(f"{answer.status_code} {answer.text}")


def run_writers(url, count, stop=None):
    acknowledged, failures = [], []
    threads = [
        threading.Thread(target=writer, args=(url, k, count, acknowledged, failures, stop))
        for k in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    return threads, acknowledged, failures


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_concurrent_writers_lose_and_duplicate_nothing(serve, kind, request, tmp_path):
    url = f"sqlite:///{tmp_path / 'load.db'}"
    per_writer = PER_WRITER
    if kind == "postgresql":  # fewer: the suite's time goes to SQLite, the harder case
        url, per_writer = request.getfixturevalue("store_url_postgresql"), 100
    server = serve(url)
    threads, acknowledged, failures = run_writers(server.url, per_writer)
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(acknowledged) == WRITERS * per_writer
    # every writer sends its ids again: all duplicates, nothing new
    again = httpx.post(server.url + "/v1/records/batch", headers=AUTH, json={
        "records": [make_record(i, request_id=f"w{k}-{i}") for k in range(WRITERS)
                    for i in range(0, per_writer, 50)]})  # fmt: skip
    assert again.json() == {"inserted": 0, "duplicates": WRITERS * per_writer // 50}
    store = Store(url)
    rows, _ = store.records(limit=10_000)
    assert store.count() == len(rows) == WRITERS * per_writer
    assert sorted(r["request_id"] for r in rows) == sorted(acknowledged)
    series = store.series("entropy", start=0, end=time.time() + 60, bucket_s=86400 * 365)
    assert sum(p["count"] for p in series) == WRITERS * per_writer  # rollups agree
    store.close()
    server.stop()
    assert "locked" not in server.log.read_text()


@pytest.mark.slow
def test_sigkill_mid_ingest_keeps_every_acknowledged_record(serve, tmp_path):
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    server = serve(url)
    stop = threading.Event()
    threads, acknowledged, failures = run_writers(server.url, 100_000, stop)
    deadline = time.monotonic() + 30
    while len(acknowledged) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) >= 400
    assert failures and all("Error" in failure for failure in failures)  # connection errors
    store = Store(url)
    with store.reader.connect() as connection:
        assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        stored = set(connection.execute(text("SELECT request_id FROM records")).scalars())
    assert set(acknowledged) <= stored
    assert len(stored) - len(acknowledged) <= WRITERS  # at most the requests cut off in flight
    store.close()
    restarted = serve(url)  # the service opens the same file again and takes writes
    answer = httpx.post(restarted.url + "/v1/records", json=make_record(0, request_id="after"),
                        headers=AUTH)  # fmt: skip
    assert answer.json() == {"inserted": 1, "duplicates": 0}


WRITE_FROM_A_PROCESS = """
from attnkit.monitor.store import Store
store = Store({url!r})
for batch in range(10):
    store.insert([
        dict(request_id=f"p{worker}-{{batch}}-{{i}}", lookback_ratio=0.5, entropy=1.0, sink=0.1,
             max_weight=0.2, prompt_tokens=5, new_tokens=2) for i in range(25)
    ])
"""


@pytest.mark.slow
def test_processes_writing_one_sqlite_file_wait_instead_of_failing(tmp_path):
    """Writers in other processes (a second service, a script) meet a busy timeout, not
    'database is locked'."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    Store(url).upgrade()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITE_FROM_A_PROCESS.format(url=url, worker=k)],
            stderr=subprocess.PIPE, text=True,
        )
        for k in range(2)
    ]  # fmt: skip
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors
    store = Store(url)
    assert store.count() == 2 * 10 * 25
    store.close()
