"""The monitoring service under load: ingest throughput and dashboard API latency.

1. Ingest: 8 writer processes × 10,000 records each POST to the service (uvicorn, one process)
   over HTTP on loopback, as single records and as batches of 100 (what ``Monitor`` sends);
   records/s over the whole run, and the database checked after: lost = duplicated = 0.
2. Dashboard: 1,000,000 records over 30 days (3 models × 2 versions) bulk-loaded through
   ``Store.insert``; then every request the dashboard makes, one at a time, ``--requests`` times
   each: p50 and p95 latency seen by the client. Goal (issue 8): p95 < 100 ms.

SQLite file (WAL) on local disk; with ``--postgres`` the ingest also runs on a PostgreSQL 15
server started for the run (Debian's binaries, default settings: fsync and synchronous commit
on). Absolute numbers; there is no reference service to interleave
with, so each configuration runs once after a warm-up.

    python benchmarks/monitor.py [--writers 8] [--per-writer 10000] [--records 1000000] [--postgres]

3. With ``--baseline-src DIR`` (the ``src`` of another attnkit, e.g. ``git archive`` of main):
   the batch-100 SQLite ingest and the dashboard requests run against the service from both
   trees, alternately (baseline, this, baseline, this, ...) on copies of the same database, and
   the table gives the median of the per-pair ratios (this / baseline), so a busy machine does
   not bias the comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.monitor.store import Store
from harness import machine, markdown_table, write_results

TOKEN = "benchmark-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODELS = [("llama", "v1"), ("llama", "v2"), ("qwen", "v1"), ("qwen", "v2"), ("gpt", "v1"),
          ("gpt", "v2")]  # fmt: skip
DAY = 86400.0
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def record(request_id: str, at: float, rng: np.random.Generator, model=("llama", "v1")) -> dict:
    return {
        "request_id": request_id, "time": at, "model": model[0], "version": model[1],
        "tags": {"route": ("qa", "chat", "search")[int(rng.integers(3))]},
        "lookback_ratio": float(rng.beta(5, 2)), "entropy": float(rng.gamma(4, 0.5)),
        "sink": float(rng.beta(2, 5)), "max_weight": float(rng.beta(2, 3)),
        "detector_score": float(rng.random()) if rng.random() < 0.5 else None,
        "prompt_tokens": int(rng.integers(20, 2000)), "new_tokens": int(rng.integers(1, 256)),
    }  # fmt: skip


class Server:
    """``uvicorn attnkit.monitor.server:create_app`` in a subprocess on a free loopback port."""

    def __init__(self, db_url: str, log: Path, src: str | None = None):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "ATTNKIT_DB": db_url, "ATTNKIT_TOKENS": TOKEN}
        if src is not None:  # the service from another source tree (--baseline-src)
            env["PYTHONPATH"] = src
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "attnkit.monitor.server:create_app",
                 "--factory", "--port", str(port), "--log-level", "warning"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/openapi.json", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _writer(args) -> tuple[float, float, list[str]]:
    """POST ``count`` records; returns the wall-clock start and end and the failures."""
    url, worker, count, batch = args
    rng = np.random.default_rng(worker)
    failures = []
    now = started = time.time()
    with httpx.Client(base_url=url, headers=AUTH, timeout=120) as client:
        for start in range(0, count, batch):
            stop = min(start + batch, count)
            rows = [record(f"w{worker}-{i}", now - i, rng) for i in range(start, stop)]
            if batch == 1:
                answer = client.post("/v1/records", json=rows[0])
            else:
                answer = client.post("/v1/records/batch", json={"records": rows})
            if answer.status_code != 200 or answer.json()["inserted"] != len(rows):
                failures.append(f"{answer.status_code} {answer.text[:200]}")
    return started, time.time(), failures


@contextlib.contextmanager
def postgres(directory: Path):
    """A PostgreSQL 15 server (Debian's binaries, default durability settings) on loopback;
    yields a function that creates an empty database and returns its URL."""
    import psycopg

    root = directory / "postgres"
    root.mkdir()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        directory.chmod(0o755)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run([*as_postgres, str(PG_BIN / "initdb"), "-D", str(root / "data"), "-U",
                    "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"],
                   check=True, capture_output=True)  # fmt: skip
    pg_ctl = [*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(root / "data")]
    options = f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=100"
    subprocess.run([*pg_ctl, "-o", options, "-w", "-l", str(root / "log"), "start"],
                   check=True, capture_output=True)  # fmt: skip
    base = f"postgresql://postgres@127.0.0.1:{port}"

    def database(name: str) -> str:
        with psycopg.connect(base + "/postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"{base}/{name}"

    try:
        yield database
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True)


def ingest(
    db_url: str, log: Path, writers: int, per_writer: int, batch: int, src: str | None = None
) -> dict:
    server = Server(db_url, log, src)
    try:
        # warm-up: one request per writer's connection path
        httpx.post(server.url + "/v1/records", headers=AUTH,
                   json=record("warm-up", time.time(), np.random.default_rng(99)))  # fmt: skip
        with multiprocessing.get_context("spawn").Pool(writers) as pool:
            jobs = [(server.url, k, per_writer, batch) for k in range(writers)]
            results = pool.map(_writer, jobs)
    finally:
        server.stop()
    # from the first writer's first request to the last writer's last answer
    seconds = max(end for _, end, _ in results) - min(start for start, _, _ in results)
    failures = [f for _, _, fs in results for f in fs]
    store = Store(db_url)
    from sqlalchemy import text

    with store.reader.connect() as connection:
        stored = connection.execute(
            text("SELECT count(*), count(DISTINCT request_id) FROM records WHERE request_id != "
                 "'warm-up'")
        ).one()  # fmt: skip
    store.close()
    expected = writers * per_writer
    return {
        "database": db_url.split(":", 1)[0], "batch": batch, "writers": writers,
        "records": expected, "seconds": seconds,
        "records_per_s": expected / seconds, "stored": stored[0],
        "lost": expected - stored[1], "duplicated": stored[0] - stored[1],
        "failed_requests": len(failures), "locked_errors": sum("locked" in f for f in failures)
        + server.log.read_text().count("locked"),
    }  # fmt: skip


def bulk_load(db_url: str, total: int, now: float) -> float:
    store = Store(db_url)
    store.upgrade()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    chunk = 10_000
    for offset in range(0, total, chunk):
        times = now - rng.random(chunk) * 30 * DAY
        rows = [
            record(f"bulk-{offset + i}", float(times[i]), rng, MODELS[(offset + i) % len(MODELS)])
            for i in range(chunk)
        ]
        store.insert(rows)
    seconds = time.perf_counter() - start
    store.close()
    return seconds


def dashboard_latency(
    db_url: str, directory: Path, requests: int, now: float, total: int, src: str | None = None
):
    server = Server(db_url, directory / "dashboard.log", src)
    one_day = {"start": now - DAY, "end": now}
    calls = {
        "series 1 day": ("/v1/series", {"signal": "lookback_ratio", **one_day}),
        "series 1 day by version": ("/v1/series", {"signal": "entropy", "by": "version",
                                                   **one_day}),
        "series 7 days by model": ("/v1/series", {"by": "model", "start": now - 7 * DAY,
                                                  "end": now}),
        "series 30 days": ("/v1/series", {"start": now - 30 * DAY, "end": now}),
        "drift (1 day vs 7 days)": ("/v1/drift", {"end": now}),
        "drift by version": ("/v1/drift", {"end": now, "by": "version"}),
        "alerts": ("/v1/alerts", {"limit": 50}),
        "records (newest 50)": ("/v1/records", {"limit": 50}),
        "records by tag": ("/v1/records", {"limit": 50, "tag": "route:search",
                                           "model": "qwen"}),
        "one record": (f"/v1/records/bulk-{total // 2}", {}),
        "groups": ("/v1/groups", {}),
    }  # fmt: skip
    rows = []
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
            for name, (path, params) in calls.items():
                client.get(path, params=params).raise_for_status()  # warm-up
                times = []
                for _ in range(requests):
                    start = time.perf_counter()
                    client.get(path, params=params).raise_for_status()
                    times.append(time.perf_counter() - start)
                times.sort()
                rows.append({
                    "request": name, "path": path, "p50_ms": 1000 * statistics.median(times),
                    "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))],
                })  # fmt: skip
    finally:
        server.stop()
    return rows


def compare(directory: Path, args, baseline: str, dashboard_db: Path, now: float) -> dict:
    """This tree's service against ``baseline``'s, interleaved: ratios this / baseline."""
    import sqlite3

    this = os.environ.get("PYTHONPATH") or str(Path(__file__).parents[1] / "src")
    trees = {"baseline": baseline, "this": this}
    rates: dict[str, list[float]] = {"baseline": [], "this": []}
    p95: dict[str, dict[str, list[float]]] = {"baseline": {}, "this": {}}
    copies = {}
    for name in trees:  # the same data; the baseline's migrations know revision 0001 only
        copies[name] = directory / f"dashboard-{name}.db"
        shutil.copy(dashboard_db, copies[name])
    with sqlite3.connect(copies["baseline"]) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0001'")
    for rep in range(args.repeats):
        for name, src in trees.items():
            db = f"sqlite:///{directory / f'ab-{name}-{rep}.db'}"
            result = ingest(db, directory / f"ab-{name}-{rep}.log", args.writers,
                            args.per_writer, 100, src)  # fmt: skip
            assert result["lost"] == result["duplicated"] == result["failed_requests"] == 0
            rates[name].append(result["records_per_s"])
            rows = dashboard_latency(f"sqlite:///{copies[name]}", directory, args.requests, now,
                                     args.records, src)  # fmt: skip
            for row in rows:
                p95[name].setdefault(row["request"], []).append(row["p95_ms"])
    ratio = [t / b for t, b in zip(rates["this"], rates["baseline"], strict=True)]
    return {
        "ingest_records_per_s": rates, "ingest_ratio_median": statistics.median(ratio),
        "dashboard_p95_ms": p95,
        "dashboard_p95_ratio_median": {
            request: statistics.median(t / b for t, b in zip(p95["this"][request], values,
                                                             strict=True))
            for request, values in p95["baseline"].items()
        },
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--per-writer", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--postgres", action="store_true", help="ingest into PostgreSQL too")
    parser.add_argument("--baseline-src", help="src folder of another attnkit to compare with")
    parser.add_argument("--repeats", type=int, default=3, help="pairs in the comparison")
    parser.add_argument("--skip-ingest-1", action="store_true",
                        help="leave out the one-record-per-request ingest (minutes)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="attnkit-bench-") as tmp:
        directory = Path(tmp)
        sizes = (args.writers, args.per_writer)
        ingests = [
            ingest(f"sqlite:///{directory / f'ingest-{b}.db'}", directory / f"ingest-{b}.log",
                   *sizes, b)
            for b in ((100,) if args.skip_ingest_1 else (1, 100))
        ]  # fmt: skip
        if args.postgres:
            with postgres(directory) as database:
                ingests += [
                    ingest(database(f"ingest{b}"), directory / f"pg-{b}.log", *sizes, b)
                    for b in (1, 100)
                ]
        now = time.time()
        db_url = f"sqlite:///{directory / 'dashboard.db'}"
        load_s = bulk_load(db_url, args.records, now)
        size_mib = sum(p.stat().st_size for p in directory.glob("dashboard.db*")) / 2**20
        latency = dashboard_latency(db_url, directory, args.requests, now, args.records)
        ab = None
        if args.baseline_src:
            ab = compare(directory, args, args.baseline_src, directory / "dashboard.db", now)
    table = "\n\n".join([
        f"Ingest over HTTP on loopback: {args.writers} writer processes x {args.per_writer:,} "
        "records, uvicorn (1 process); SQLite WAL (synchronous=NORMAL), PostgreSQL 15 defaults",
        markdown_table(
            ["database", "records per request", "records", "seconds", "records/s", "lost",
             "duplicated", "failed requests", "'database is locked'"],
            [[r["database"], r["batch"], f"{r['records']:,}", f"{r['seconds']:.1f}",
              f"{r['records_per_s']:,.0f}", r["lost"], r["duplicated"], r["failed_requests"],
              r["locked_errors"]] for r in ingests],
        ),
        f"Dashboard API with {args.records:,} stored records over 30 days (bulk load through "
        f"Store.insert: {load_s:.0f} s, {args.records / load_s:,.0f} records/s; database "
        f"{size_mib:,.0f} MiB); {args.requests} sequential requests each, client-side latency",
        markdown_table(
            ["request", "p50 ms", "p95 ms", "< 100 ms"],
            [[r["request"], f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}",
              "yes" if r["p95_ms"] < 100 else "no"] for r in latency],
        ),
    ])  # fmt: skip
    if ab is not None:
        pairs = args.repeats
        rows = [["ingest, SQLite, 100 per request (records/s)",
                 " / ".join(f"{v:,.0f}" for v in ab["ingest_records_per_s"]["baseline"]),
                 " / ".join(f"{v:,.0f}" for v in ab["ingest_records_per_s"]["this"]),
                 f"{ab['ingest_ratio_median']:.3f}"]]  # fmt: skip
        runs = ab["dashboard_p95_ms"]
        for request, ratio in ab["dashboard_p95_ratio_median"].items():
            rows.append([f"{request} (p95 ms)",
                         " / ".join(f"{v:.1f}" for v in runs["baseline"][request]),
                         " / ".join(f"{v:.1f}" for v in runs["this"][request]),
                         f"{ratio:.3f}"])  # fmt: skip
        table += "\n\n" + "\n\n".join([
            f"This tree against --baseline-src, interleaved, {pairs} pairs (same data; each "
            "pair: baseline then this); ratio = median of this / baseline",
            markdown_table(["measure", "baseline runs", "this tree's runs", "median ratio"], rows),
        ])  # fmt: skip
    print(table)
    payload = {
        "machine": machine(), "ingest": ingests, "bulk_load_s": load_s,
        "stored_records": args.records, "database_mib": size_mib, "dashboard": latency,
        "comparison": ab,
    }  # fmt: skip
    write_results("monitor", payload, table)


if __name__ == "__main__":
    main()
