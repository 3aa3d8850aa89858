"""``attnkit serve`` and ``attnkit monitor report``."""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from monitor_testing import free_port, make_record
from typer.testing import CliRunner

from attnkit.cli import app
from attnkit.monitor.store import Store


def test_monitor_report_writes_the_drift_of_the_stored_windows(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store(url)
    store.upgrade()
    rng = np.random.default_rng(0)
    now = time.time()
    rows = []
    for i in range(400):
        current = i % 2 == 1
        rows.append(make_record(i, time=now - (600 if current else 3 * 86400) - i,
                                lookback_ratio=float(rng.normal(0.3 if current else 0.7, 0.05)),
                                entropy=float(rng.normal(2.0, 0.1))))  # fmt: skip
    store.insert(rows)
    store.close()
    out = tmp_path / "drift.html"
    result = CliRunner().invoke(app, ["monitor", "report", "--db", url, "--out", str(out),
                                      "--model", "llama"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "drifted: lookback_ratio;" in result.output  # entropy, sink, max_weight stay put
    page = out.read_text()
    assert "lookback_ratio" in page and "<svg" in page and "llama" in page
    other = CliRunner().invoke(app, ["monitor", "report", "--db", url, "--out", str(out),
                                     "--model", "mistral"])  # fmt: skip
    assert other.exit_code == 2 and "no records" in other.output


def test_monitor_report_says_when_there_is_nothing_to_compare(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner().invoke(app, ["monitor", "report", "--db", url, "--out",
                                      str(tmp_path / "x.html")])  # fmt: skip
    assert result.exit_code == 2 and "no records" in result.output


def test_serve_refuses_an_open_interface_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTNKIT_TOKENS", raising=False)
    result = CliRunner().invoke(app, ["serve", "--db", f"sqlite:///{tmp_path / 's.db'}",
                                      "--host", "0.0.0.0"])  # fmt: skip
    assert result.exit_code == 2 and "token" in result.output


@pytest.mark.slow
def test_serve_starts_the_service(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "attnkit"), "serve",
         "--db", f"sqlite:///{tmp_path / 's.db'}", "--port", str(port), "--token", "cli-token"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answer = httpx.post(url + "/v1/records", json=make_record(0),
                                    headers={"Authorization": "Bearer cli-token"})  # fmt: skip
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer.json() == {"inserted": 1, "duplicates": 0}
        assert httpx.get(url + "/v1/records").status_code == 401
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert "cli-token" not in output
