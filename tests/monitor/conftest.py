"""Real databases for the monitor tests: a SQLite file, and a PostgreSQL server on loopback."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from monitor_testing import TOKEN, LiveServer, free_port

from attnkit.monitor.store import Store

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(command: list[str]) -> list[str]:
    """Run as the ``postgres`` user when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server (initdb + pg_ctl) on a free loopback port."""
    initdb = PG_BIN / "initdb" if (PG_BIN / "initdb").exists() else shutil.which("initdb")
    if initdb is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries are missing: .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql): skipping its tests")
    bin_dir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="attnkit-postgres-"))  # pytest's tmp dirs are 0700
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres([str(initdb), "-D", str(data), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--locale=C.UTF-8"]),
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=100"
    subprocess.run(
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w",
                      "-l", str(root / "log"), "start"]),
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def _fresh_postgres_database(url: str) -> str:
    """An empty schema of the test server, as the URL's search path (lighter than a database)."""
    import psycopg

    name = f"t{time.monotonic_ns()}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {name}")
    return f"{url}?options=-csearch_path%3D{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """An empty database of each kind (not yet migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monitor.db'}"
    return _fresh_postgres_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store_url_postgresql(postgres_url):
    """An empty PostgreSQL database."""
    return _fresh_postgres_database(postgres_url)


@pytest.fixture
def store(store_url):
    """A migrated store of each kind."""
    store = Store(store_url)
    store.upgrade()
    yield store
    store.close()


@pytest.fixture
def client(tmp_path):
    """The service on a fresh SQLite file, behind a bearer token, in-process."""
    from fastapi.testclient import TestClient

    from attnkit.monitor.server import create_app
    from attnkit.monitor.settings import Settings

    settings = Settings(db=f"sqlite:///{tmp_path / 'api.db'}", tokens=(TOKEN, "second-token"),
                        max_body_bytes=64 * 1024)  # fmt: skip
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def serve(tmp_path):
    """``serve(db_url, rules) -> LiveServer``; every server started is stopped at the end."""
    started = []

    def start(db_url: str | None = None, rules: Path | None = None) -> LiveServer:
        server = LiveServer(db_url or f"sqlite:///{tmp_path / 'live.db'}", tmp_path, rules)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
