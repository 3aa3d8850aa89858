"""Real databases for the monitor tests: a SQLite file, and a PostgreSQL server on loopback."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from attnkit.monitor.store import Store

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    import psycopg

    name = f"t{time.monotonic_ns()}"
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


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


TOKEN = "t0k3n-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_record(i, **fields):
    """A valid API record whose signals are simple functions of ``i``."""
    return {
        "request_id": f"req-{i}", "time": time.time() - 60 + (i % 50), "model": "llama",
        "version": "v1", "tags": {"route": "qa"}, "lookback_ratio": 0.5 + (i % 10) / 100,
        "entropy": 2.0, "sink": 0.3, "max_weight": 0.4, "prompt_tokens": 12, "new_tokens": 4,
        **fields,
    }  # fmt: skip


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


class LiveServer:
    """``uvicorn attnkit.monitor.server:create_app`` in a subprocess on a loopback port."""

    def __init__(self, db_url: str, tmp_path: Path, rules: Path | None = None):
        self.db_url, self.port = db_url, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"server-{self.port}.log"
        env = {**os.environ, "ATTNKIT_DB": db_url, "ATTNKIT_TOKENS": TOKEN, "OMP_NUM_THREADS": "1"}
        if rules is not None:
            env["ATTNKIT_RULES"] = str(rules)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "attnkit.monitor.server:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/openapi.json", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start: {self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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
