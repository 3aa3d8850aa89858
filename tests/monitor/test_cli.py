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


def narrow_database(tmp_path, name="narrow.db"):
    """Windows of constant values one float step apart (0.3 and 0.30000000000000004)."""
    url = f"sqlite:///{tmp_path / name}"
    store = Store(url)
    store.upgrade()
    now = time.time()
    store.insert([make_record(i, time=now - (600 if i % 2 else 3 * 86400) - i,
                              lookback_ratio=0.30000000000000004 if i % 2 else 0.3, entropy=0.0)
                  for i in range(40)])  # fmt: skip
    store.close()
    return url


def test_monitor_report_on_constant_and_narrow_windows(tmp_path):
    # before: ValueError: Too many bins for data range
    url = narrow_database(tmp_path)
    out = tmp_path / "narrow.html"
    result = CliRunner().invoke(app, ["monitor", "report", "--db", url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "drifted: lookback_ratio;" in result.output  # 20 of one value vs 20 of the other
    assert out.read_text().count("<svg") == 4  # detector_score: none stored


def test_monitor_report_on_a_read_only_file_system(tmp_path):
    # before: "attempt to write a readonly database" (it migrated and set up WAL first)
    import os
    import shutil

    folder = tmp_path / "ro"
    folder.mkdir()
    url = narrow_database(folder)
    out = tmp_path / "ro.html"
    command = [str(Path(sys.executable).parent / "attnkit"), "monitor", "report", "--db", url,
               "--out", str(out)]  # fmt: skip
    if os.geteuid() == 0 and shutil.which("unshare"):  # root ignores modes: a real ro mount
        script = f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder} && "
        script += f"touch {folder}/probe 2>/dev/null && exit 99; exec {' '.join(command)}"
        command = ["unshare", "-m", "sh", "-c", script]
    else:
        folder.chmod(0o555)
        (folder / "narrow.db").chmod(0o444)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        folder.chmod(0o755)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "drifted: lookback_ratio;" in result.stdout and out.is_file()
    assert not (folder / "probe").exists()


def test_serve_and_report_say_what_is_wrong_without_a_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTNKIT_TOKENS", raising=False)
    runner = CliRunner()
    for arguments, env, words in [
        (["serve", "--db", "mysql://x/y"], {}, "sqlite:///FILE or postgresql"),
        (["serve", "--db", f"sqlite:///{tmp_path / 'a.db'}"], {"ATTNKIT_RETENTION_DAYS": "soon"},
         "ATTNKIT_RETENTION_DAYS must be a number"),
        (["serve", "--db", f"sqlite:///{tmp_path / 'b.db'}", "--token", "tökén"], {},
         "RFC 6750"),
        (["monitor", "report", "--db", "mysql://x/y"], {}, "sqlite:///FILE or postgresql"),
    ]:  # fmt: skip
        result = runner.invoke(app, arguments, env=env)
        assert result.exit_code == 2, result.output
        assert words in " ".join(result.output.split()) and "Traceback" not in result.output


def test_serve_refuses_a_database_whose_schema_is_behind(tmp_path):
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    store.upgrade("0003")
    store.close()
    result = CliRunner().invoke(app, ["serve", "--db", url])
    assert result.exit_code == 2
    assert "behind this attnkit's '0004'" in " ".join(result.output.split())
    store = Store(url)
    with store.reader.connect() as connection:
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
        )
    store.close()
