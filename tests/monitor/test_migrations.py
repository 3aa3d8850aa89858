"""Upgrades keep the data: a database made by every earlier form of the schema, on SQLite and
PostgreSQL, is filled, refused by the service (behind), upgraded, and checked row by row.

Before migrations were append-only, ``0001_initial.py`` was edited in place by three commits;
databases made by each were stamped ``0001`` and never upgraded (the service then answered 503
to every write: "no such table: groups"). ``old_schemas/`` holds each form verbatim from git.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, insert, text

from attnkit.monitor.settings import Settings
from attnkit.monitor.store import SchemaError, Store, database_url
from attnkit.monitor.tables import Base

OLD = Path(__file__).parent / "old_schemas"
FORMS = sorted(path.name for path in OLD.glob("s_*"))
NOW = 1_700_000_000.0
SIGNALS = ("lookback_ratio", "entropy", "sink", "max_weight")


def old_records():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        rows.append({
            "request_id": f"old-{i}", "time": NOW + float(rng.random() * 3 * 3600),
            "model": "a" if i % 3 else "b", "version": "v1" if i % 2 else "v2",
            "tags": {"route": f"r{i % 4}", "ü\"\\": "x"},
            "lookback_ratio": float(rng.random()), "entropy": float(rng.random() * 3),
            "sink": float(rng.random()), "max_weight": float(rng.random()),
            "detector_score": None if i % 5 == 0 else float(rng.random()),
            "prompt_tokens": 10 + i, "new_tokens": 1 + i % 7,
            "trace": None if i % 2 else {"tokens": ["a"]},
        })  # fmt: skip
    return rows


def rollups(rows, widths):
    sums = {}
    for row in rows:
        for width in widths:
            key = (width, int(row["time"] // width) * width, row["model"], row["version"])
            entry = sums.setdefault(key, dict.fromkeys(
                (*SIGNALS, "detector_score", "detector_count", "count", "prompt_tokens",
                 "new_tokens"), 0))  # fmt: skip
            entry["count"] += 1
            for name in (*SIGNALS, "prompt_tokens", "new_tokens"):
                entry[name] += row[name]
            if row["detector_score"] is not None:
                entry["detector_score"] += row["detector_score"]
                entry["detector_count"] += 1
    return [{"width": w, "bucket": b, "model": m, "version": v, **e}
            for (w, b, m, v), e in sums.items()]  # fmt: skip


def build_old_database(url: str, form: str, work: Path) -> list[dict]:
    """Create the schema of ``form`` (stamped 0001) and fill it as that commit's code would."""
    scripts = work / form
    shutil.copytree(OLD / form, scripts)
    shutil.copy(OLD / "env.py", scripts / "env.py")
    engine = create_engine(database_url(url))
    config = Config()
    config.set_main_option("script_location", str(scripts))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    meta = MetaData()
    meta.reflect(engine)
    rows = old_records()
    with engine.begin() as connection:
        connection.execute(insert(meta.tables["records"]), rows)
        has_width = "width" in meta.tables["rollups"].c
        sums = rollups(rows, (60, 3600) if has_width else (60,))
        if not has_width:
            sums = [{k: v for k, v in s.items() if k != "width"} for s in sums]
        connection.execute(insert(meta.tables["rollups"]), sums)
        alert = {"rule": "low", "signal": "lookback_ratio", "severity": "warning",
                 "value": 0.25, "message": "below 0.3", "fired_at": NOW}  # fmt: skip
        if "tags" in meta.tables["alerts"].c:
            alert["tags"] = {"model": "a"}
        connection.execute(insert(meta.tables["alerts"]), [alert])
        if "groups" in meta.tables:
            pairs = sorted({(r["model"], r["version"]) for r in rows})
            connection.execute(insert(meta.tables["groups"]),
                               [{"model": m, "version": v} for m, v in pairs])  # fmt: skip
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert version == "0001"  # what every one of these databases says about itself
    return rows


def test_every_earlier_schema_form_is_kept_as_released():
    assert FORMS == ["s_1176e24", "s_278311c", "s_8e0ab96", "s_93cd1af"]
    shipped = Path(__file__).parents[2] / "src/attnkit/monitor/migrations/versions"
    released = (OLD / "s_278311c/versions/0001_initial.py").read_text()
    assert (shipped / "0001_initial.py").read_text() == released  # 0001 as it was released


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_an_upgrade_from_every_earlier_schema_keeps_the_data(store_url, form, tmp_path):
    from attnkit.monitor.server import create_app

    rows = build_old_database(store_url, form, tmp_path)
    store = Store(store_url)
    with pytest.raises(SchemaError, match="behind this attnkit's '0004'.*serve --upgrade"):
        store.check_schema()
    with pytest.raises(SchemaError, match="'0001'"):  # the service refuses to start
        create_app(Settings(db=store_url))
    store.upgrade()
    store.check_schema()
    assert store.revision() == Store.head() == "0004"
    with store.writer.connect() as connection:  # the tables are the models' tables
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], diff
    kept = {row["request_id"]: row for row in store.records(limit=1000)[0]}
    assert len(kept) == store.count() == len(rows)
    for row in rows:  # every field of every record, exactly
        got = store.get(row["request_id"])
        assert {k: got[k] for k in row} == row
    for width in (60, 3600):  # rollups (rebuilt where they had no width) agree with the records
        points = store.series("entropy", start=NOW - 3600, end=NOW + 5 * 3600, bucket_s=width,
                              by="model")  # fmt: skip
        for point in points:
            inside = [r["entropy"] for r in rows if r["model"] == point["group"]
                      and 0 <= r["time"] - point["bucket"] < width]  # fmt: skip
            assert point["count"] == len(inside)
            assert point["mean"] == pytest.approx(np.mean(inside), rel=1e-12)
        assert sum(p["count"] for p in points) == len(rows)
    pairs = sorted({(r["model"], r["version"]) for r in rows})
    assert [(g["model"], g["version"]) for g in store.groups()] == pairs
    (alert,) = store.alerts()
    assert (alert["rule"], alert["value"], alert["fired_at"]) == ("low", 0.25, NOW)
    assert alert["tags"] == ({} if form == "s_278311c" else {"model": "a"})
    store.insert([{**rows[0], "request_id": "new", "tags": {}}])  # writes work afterwards
    assert store.count() == len(rows) + 1
    assert store.records(tags={'ü"\\': "x"}, limit=1000)[0][0]["request_id"].startswith("old")
    store.close()
    create_app(Settings(db=store_url))  # and the service starts


def test_the_service_creates_an_empty_database_and_refuses_an_unknown_revision(tmp_path):
    from attnkit.monitor.server import create_app

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    create_app(Settings(db=url))
    store = Store(url)
    assert store.revision() == Store.head()
    with store.writer.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match="unknown to this attnkit.*newer"):
        create_app(Settings(db=url))
    store.close()
    ghost = f"sqlite:///{tmp_path / 'ghost.db'}"
    engine = create_engine(ghost)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE records (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(SchemaError, match="no schema revision"):
        create_app(Settings(db=ghost))


def test_the_migration_history_is_linear():
    store_versions = Path(__file__).parents[2] / "src/attnkit/monitor/migrations/versions"
    names = sorted(p.name for p in store_versions.glob("0*.py"))
    assert [n[:4] for n in names] == ["0001", "0002", "0003", "0004"]
