"""The store against real databases: a SQLite file and a PostgreSQL server."""

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from attnkit.monitor.store import Store, database_url
from attnkit.monitor.tables import Base

NOW = 1_700_000_000.0


def record(i, **fields):
    """A record whose signals are simple functions of ``i``."""
    return {
        "request_id": f"r{i}", "time": NOW + i, "model": "m", "version": "v1",
        "tags": {"route": "a" if i % 2 else "b"}, "lookback_ratio": i % 101 / 100,
        "entropy": 1.0 + i,
        "sink": 0.5, "max_weight": 0.25, "prompt_tokens": 10 + i, "new_tokens": 3, **fields,
    }  # fmt: skip


def test_migrations_build_the_models_schema_from_empty(store_url):
    store = Store(store_url)
    assert inspect(store.writer).get_table_names() == []
    store.upgrade()
    store.upgrade()  # already at head: nothing to do
    names = set(inspect(store.writer).get_table_names())
    assert names == {"alembic_version", "records", "rollups", "groups", "alerts"}
    with store.writer.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    indexes = {ix["name"] for ix in inspect(store.writer).get_indexes("records")}
    assert {"ix_records_time", "ix_records_model_version_time"} <= indexes
    store.close()


def test_insert_is_idempotent_on_request_id(store):
    first = store.insert([record(i) for i in range(10)])
    assert (first.inserted, first.duplicates) == (10, 0)
    again = store.insert([record(i) for i in range(5, 15)] + [record(14)])
    assert (again.inserted, again.duplicates) == (5, 6)
    assert store.count() == 15
    # the rollups count every record once
    series = store.series("lookback_ratio", start=NOW - 60, end=NOW + 60, bucket_s=600)
    assert sum(point["count"] for point in series) == 15
    assert series[0]["mean"] == pytest.approx(np.mean([i / 100 for i in range(15)]))


def test_queries_filter_by_time_and_tags_and_page(store):
    store.insert([record(i) for i in range(30)])
    rows, cursor = store.records(start=NOW + 10, end=NOW + 20, limit=4)
    assert [r["request_id"] for r in rows] == ["r19", "r18", "r17", "r16"]
    seen = [r["request_id"] for r in rows]
    while cursor is not None:
        rows, cursor = store.records(start=NOW + 10, end=NOW + 20, limit=4, before=cursor)
        seen += [r["request_id"] for r in rows]
    assert seen == [f"r{i}" for i in range(19, 9, -1)]
    odd, _ = store.records(tags={"route": "a"}, limit=100)
    assert sorted(int(r["request_id"][1:]) for r in odd) == list(range(1, 30, 2))
    values = store.values(["entropy"], start=NOW, end=NOW + 5)
    np.testing.assert_allclose(np.sort(values["entropy"]), [1, 2, 3, 4, 5])


def test_series_by_tag_buckets_by_minute(store):
    rows = [record(i, time=NOW + 30 * i, version=f"v{i % 2}") for i in range(8)]
    store.insert(rows)
    start = NOW - NOW % 60
    series = store.series("entropy", start=start, end=start + 600, by="version", bucket_s=120)
    expected = {}
    for row in rows:
        key = (int(row["time"] // 120 * 120), row["version"])
        expected.setdefault(key, []).append(row["entropy"])
    got = {(p["bucket"], p["group"]): (p["count"], p["mean"]) for p in series}
    assert got == {k: (len(v), pytest.approx(np.mean(v))) for k, v in expected.items()}
    assert store.groups() == [{"model": "m", "version": "v0"}, {"model": "m", "version": "v1"}]


def test_hourly_and_minute_rollups_agree(store):
    rng = np.random.default_rng(0)
    times = NOW + rng.random(200) * 6 * 3600
    store.insert([record(i, time=float(t), entropy=float(rng.random())) for i, t in
                  enumerate(times)])  # fmt: skip
    start = NOW - NOW % 3600
    hourly = store.series("entropy", start=start, end=start + 7 * 3600, bucket_s=3600)
    minutes = store.series("entropy", start=start, end=start + 7 * 3600, bucket_s=1800)
    values = {row["request_id"]: row["entropy"] for row in store.records(limit=500)[0]}
    for point in hourly:  # against the records themselves
        inside = [values[f"r{i}"] for i, t in enumerate(times) if 0 <= t - point["bucket"] < 3600]
        assert point["count"] == len(inside) and point["mean"] == pytest.approx(np.mean(inside))
    assert sum(p["count"] for p in minutes) == sum(p["count"] for p in hourly) == 200
    assert len(minutes) > len(hourly) >= 6


def test_detector_score_is_optional(store):
    store.insert([record(0), record(1, detector_score=0.75)])
    assert store.get("r0")["detector_score"] is None
    assert store.values(["detector_score"])["detector_score"].tolist() == [0.75]
    series = store.series("detector_score", start=NOW - 60, end=NOW + 60, bucket_s=600)
    assert [(p["count"], p["mean"]) for p in series] == [(1, 0.75)]


def test_trace_round_trips_and_strings_are_stored_verbatim(store):
    nasty = "'); DROP TABLE records; -- <script>alert(1)</script> \u00e9\u4e2d"
    trace = {"tokens": [nasty, "ok"], "lookback_ratio": [0.5, 1.0]}
    store.insert([record(0, tags={"q": nasty}, model=nasty, trace=trace)])
    stored = store.get("r0")
    assert stored["model"] == nasty and stored["tags"] == {"q": nasty}
    assert stored["trace"] == trace
    assert store.records(tags={"q": nasty})[0][0]["request_id"] == "r0"
    assert store.count() == 1
    assert store.get("missing") is None


def test_retention_deletes_older_records_and_their_rollups(store):
    store.insert([record(i, time=NOW - 86400 * i) for i in range(10)])
    assert store.delete_older_than(3.5, now=NOW) == 6
    assert sorted(r["request_id"] for r in store.records()[0]) == ["r0", "r1", "r2", "r3"]
    series = store.series("entropy", start=0, end=NOW + 60, bucket_s=60)
    assert sum(p["count"] for p in series) == 4
    store.insert([record(99, time=NOW - 50 * 86400, version="old")])
    assert {g["version"] for g in store.groups()} == {"v1", "old"}
    assert store.delete_older_than(3.5, now=NOW) == 1
    assert store.groups() == [{"model": "m", "version": "v1"}]  # no records left for "old"


def test_alerts_are_stored_newest_first(store):
    store.add_alerts([
        {"rule": "r", "signal": "sink", "severity": "warning", "value": 0.5, "message": "m",
         "fired_at": NOW + i, "tags": {}} for i in range(3)
    ])  # fmt: skip
    assert [a["fired_at"] for a in store.alerts()] == [NOW + 2, NOW + 1, NOW]
    assert len(store.alerts(since=NOW + 1)) == 2


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"lookback_ratio": float("nan")}, ValueError, "finite"),
        ({"entropy": "high"}, TypeError, "entropy"),
        ({"prompt_tokens": 1.5}, TypeError, "prompt_tokens"),
        ({"request_id": ""}, ValueError, "request_id"),
        ({"colour": "red"}, ValueError, "unknown"),
        ({"sink": None}, ValueError, "sink"),
    ],
)
def test_bad_records_are_rejected_before_writing(tmp_path, fields, error, match):
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.upgrade()
    with pytest.raises(error, match=match):
        store.insert([record(0), record(1, **fields)])
    assert store.count() == 0


def test_urls(tmp_path):
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(ValueError, match="SQLite file"):
        Store("sqlite://")
    with pytest.raises(ValueError, match="postgresql"):
        Store("mysql://u@h/db")
    assert "secret" not in repr(Store("postgresql://u:secret@h/db"))
