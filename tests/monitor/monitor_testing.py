"""What the monitor tests share: the token, a valid record, a free port, a live server.

(A module of its own, not conftest.py: test modules import these names, and several test
folders have a conftest.py.)
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        deadline = time.monotonic() + 180  # a bound for a busy machine, not a speed check
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


class InProcessServer:
    """``uvicorn.Server`` for an app object in a thread, on a loopback port (for settings that
    the environment does not carry)."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
