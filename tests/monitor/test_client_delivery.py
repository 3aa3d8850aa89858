"""The client never loses a good record: checks at log time, refused batches split down to the
refused records (dead letters), backoff with one warning per outage, writes at exit and on
SIGTERM, and close() that keeps what it could not write."""

import logging
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from monitor_testing import TOKEN, InProcessServer, free_port, make_record

from attnkit.monitor.client import Monitor, MonitorConfig, check_record
from attnkit.monitor.store import Store


def record(i, **fields):
    return make_record(i, **{"request_id": f"r{i}", **fields})


def make_target(kind, request, tmp_path):
    """``(target for Monitor, database URL to count in)``: a SQLite file, or the service."""
    if kind == "database":
        url = f"sqlite:///{tmp_path / 'direct.db'}"
        return url, url
    server = service(request, tmp_path)
    return server.url, server.db_url


def service(request, tmp_path, **options):
    """The service (uvicorn, in this process) on a SQLite file; stopped at the end."""
    from attnkit.monitor.server import create_app
    from attnkit.monitor.settings import Settings

    db = f"sqlite:///{tmp_path / 'service.db'}"
    server = InProcessServer(create_app(Settings(db=db, tokens=(TOKEN,), **options)))
    server.db_url = db
    request.addfinalizer(server.stop)
    return server


def stored(url):
    store = Store(url)
    try:
        return {row["request_id"] for row in store.records(limit=1000)[0]}
    finally:
        store.close()


@pytest.mark.parametrize(
    ("kind", "bad"),
    [("database", float("nan")), ("database", -0.5), ("database", 1.7e308), ("http", float("nan"))],
)
def test_one_bad_signal_among_400_records_costs_only_that_record(kind, bad, request, tmp_path):
    # before: a NaN among 399 good records stored 0 of them and close() raised
    url, db = make_target(kind, request, tmp_path)
    monitor = Monitor(url, TOKEN, flush_interval=60)
    for i in range(400):
        if i == 200:
            with pytest.raises(ValueError, match="'r200' .*lookback_ratio"):
                monitor.log_record(record(i, lookback_ratio=bad))
        else:
            monitor.log_record(record(i))
    monitor.close()
    assert monitor.pending == 0
    assert stored(db) == {f"r{i}" for i in range(400)} - {"r200"}


def test_bad_records_are_named_with_the_field():
    with pytest.raises(ValueError, match="entropy: Input should be greater than or equal to 0"):
        check_record(record(0, entropy=-1.0))
    with pytest.raises(ValueError, match="prompt_tokens"):
        check_record(record(0, prompt_tokens=-3))
    with pytest.raises(ValueError, match="cannot be sent as JSON"):
        check_record(record(0, tags={"k": object()}))
    with pytest.raises(TypeError, match="mapping"):
        check_record(["not", "a", "record"])
    assert check_record(record(0)).startswith('{"request_id": "r0"')


class PickyStore(Store):
    """Refuses records whose id starts with ``bad`` (as a database refuses a value)."""

    def __init__(self, url):
        super().__init__(url)
        self.writes = []

    def prepare(self, record):
        if record["request_id"].startswith("bad"):
            raise ValueError(f"refused {record['request_id']}")
        return super().prepare(record)

    def write(self, rows):
        self.writes.append(len(rows))
        return super().write(rows)


def test_a_refused_batch_is_split_until_the_refused_records_are_alone(tmp_path):
    store = PickyStore(f"sqlite:///{tmp_path / 'picky.db'}")
    store.upgrade()
    monitor = Monitor(store, batch_size=100, flush_interval=60, max_rejected=2)
    bad = {5, 50, 97}
    for i in range(100):
        monitor.log_record(record(i, request_id=f"bad-{i}" if i in bad else f"r{i}"))
    monitor.close()
    assert store.count() == 97 and monitor.pending == 0
    assert monitor.rejected_total == 3 and len(monitor.rejected) == 2  # bounded, newest kept
    assert [r.record["request_id"] for r in monitor.rejected] == ["bad-50", "bad-97"]
    assert monitor.rejected[-1].reason == "refused bad-97"
    assert sum(store.writes) == 97 and len(store.writes) < 20  # halves, not one by one
    store.close()


def big_record(i, tokens=2000):
    trace = {
        "tokens": ["t" * 40] * tokens, "lookback_ratio": [0.5] * tokens,
        "entropy": [1.0] * tokens, "sink": [0.1] * tokens, "max_weight": [0.2] * tokens,
        "retrieval": [0.0] * tokens, "leaned_on": [[] for _ in range(tokens)],
        "context": {"start": 0, "tokens": ["c"], "truncated": False},
    }  # fmt: skip
    return record(i, trace=trace)


def test_a_batch_over_the_service_limit_is_split_not_dropped(request, tmp_path):
    # before: a batch over the body limit got 413 and every record in it was dropped (a batch
    # over 8 MB: 0 of 100 stored). Here the service takes 1 MiB and 100 records make ~1.3 MB.
    server = service(request, tmp_path, max_body_bytes=1024 * 1024)
    monitor = Monitor(server.url, TOKEN, batch_size=100, flush_interval=60)
    for i in range(100):
        monitor.log_record(big_record(i, tokens=200))
    monitor.close()
    assert len(stored(server.db_url)) == 100 and not monitor.rejected
    by_size = Monitor(server.url, TOKEN, batch_size=100, flush_interval=60,
                      max_request_bytes=512 * 1024)  # fmt: skip
    for i in range(100, 200):  # split before sending: no 413 at all
        by_size.log_record(big_record(i, tokens=200))
    by_size.close()
    assert len(stored(server.db_url)) == 200 and not by_size.rejected


class DownStore(Store):
    """A database that cannot be reached until ``up`` is set; counts the attempts."""

    up, attempts = False, 0

    def write(self, rows):
        self.attempts += 1
        if not self.up:
            raise ConnectionError("database away")
        return super().write(rows)


def test_an_outage_backs_off_and_warns_once(tmp_path, caplog):
    # before: one write attempt and one WARNING per log_record once 100 records waited
    caplog.set_level(logging.WARNING, logger="attnkit.monitor.client")
    store = DownStore(f"sqlite:///{tmp_path / 'down.db'}")
    store.upgrade()
    monitor = Monitor(store, batch_size=10, flush_interval=60, retry_initial=30.0)
    for i in range(10):  # a full batch: the background thread tries at once, and fails
        monitor.log_record(record(i))
    deadline = time.monotonic() + 60
    while store.attempts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(10, 500):  # every one of these wakes the thread: it keeps backing off
        monitor.log_record(record(i))
    assert 1 <= store.attempts <= 2  # (the 30 s backoff holds for the 490 calls)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "once per outage" in warnings[0].getMessage()
    store.up = True
    monitor.close()  # the target is back: every record is written
    assert store.count() == 500 and monitor.pending == 0
    store.close()


def test_close_keeps_what_it_could_not_write():
    monitor = Monitor(f"http://127.0.0.1:{free_port()}", TOKEN, flush_interval=60,
                      close_timeout=0.0)  # fmt: skip
    for i in range(5):
        monitor.log_record(record(i))
    with pytest.raises(RuntimeError, match="could not write 5 records.*monitor.unsent"):
        monitor.close()
    assert [r["request_id"] for r in monitor.unsent] == [f"r{i}" for i in range(5)]


def test_tokens_an_http_header_cannot_carry_are_refused_at_once():
    # before: accepted, then UnicodeEncodeError in the background thread at every write
    with pytest.raises(ValueError, match="token must be ASCII"):
        Monitor("http://127.0.0.1:9", "tökén")
    with pytest.raises(ValueError, match="retry_initial"):
        MonitorConfig(retry_initial=0)


SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from monitor_testing import make_record
from attnkit.monitor.client import Monitor
monitor = Monitor({url!r}, flush_interval=60)
for i in range(250):
    monitor.log_record(make_record(i, request_id=f"r{{i}}"))
print("queued", flush=True)
if {wait}:
    time.sleep(60)
"""


def run_script(tmp_path, wait):
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    code = SCRIPT.format(tests=str(__import__("pathlib").Path(__file__).parent), url=url, wait=wait)
    return url, subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.slow
def test_queued_records_are_written_at_interpreter_exit(tmp_path):
    # before: a normal exit without close() stored 0 of 250, without a warning
    url, process = run_script(tmp_path, wait=False)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert len(stored(url)) == 250


@pytest.mark.slow
def test_queued_records_are_written_on_sigterm(tmp_path):
    url, process = run_script(tmp_path, wait=True)
    assert process.stdout.readline() == b"queued\n"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGTERM, err.decode()  # still dies of SIGTERM
    assert len(stored(url)) == 250


def test_rounding_just_outside_a_range_is_clipped_and_more_is_refused():
    from types import SimpleNamespace

    import torch

    from attnkit.monitor.client import summarize

    def trace(entropy):
        ones = torch.ones(2, 1, 1)
        return SimpleNamespace(lookback_ratio=ones * (1 + 1e-7), entropy=ones * entropy,
                               sink=ones * 0.5, max_weight=ones, prompt_ids=torch.arange(3),
                               new_ids=torch.arange(2))  # fmt: skip

    near = summarize(trace(-1e-9), request_id="near")
    assert (near["entropy"], near["lookback_ratio"]) == (0.0, 1.0)
    check_record(near)
    with pytest.raises(ValueError, match="entropy"):
        check_record(summarize(trace(-0.5), request_id="far"))
