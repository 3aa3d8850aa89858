"""benchmarks/run_all.py: the report gathers every table, names its runs, draws the scaling."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def run_all():
    sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location("run_all", HERE / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


MACHINE = {"cpu": "Test CPU", "cores": 2, "torch": "2.13.0", "threads": 2, "python": "3.11"}


def _results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    mechanisms = [
        {
            "length": n,
            "pass": p,
            "attnkit_ms": n / 100,
            "plain_sdpa_ms": n / 100,
            "torch_mha_ms": n / 90,
            "peak_mib": {"attnkit": n / 50, "attnkit_weights": n * n / 1e4},
        }
        for n in (256, 512)
        for p in ("fwd", "fwd+bwd")
    ]
    capture = [
        {
            "length": n,
            "plain_ms": 10.0 * n,
            "capture_ratio": 1.02,
            "eager_ratio": 3.0,
            "forward_added_mib": {"plain": 40, "capture": 41, "eager": n},
        }
        for n in (512, 2048)
    ]
    for name, rows in (("mechanisms", mechanisms), ("capture", capture)):
        payload = {"machine": {**MACHINE, "date": "2026-11-24 09:55 UTC"}, "rows": rows}
        (results / f"{name}.json").write_text(json.dumps(payload))
        (results / f"{name}.md").write_text(f"# {name} heading\n\n| a |\n|---|\n| 1 |\n")
    return results


def test_report_holds_every_table_its_dates_and_the_runs(run_all, tmp_path):
    results = _results(tmp_path)
    runs = {"capture": {"status": "ok", "returncode": 0, "seconds": 12.5}}
    out = run_all.write(results, runs, tmp_path / "RESULTS.md")
    text = out.read_text()
    assert "Test CPU" not in text.split("\n")[2]  # the header names this machine, not a table's
    assert "Measured 2026-11-24 09:55 UTC, Test CPU, 2 threads, torch 2.13.0." in text
    assert "### mechanisms heading" in text and "### capture heading" in text  # demoted
    assert "| ok (12.5 s) |" in text  # capture ran now
    assert "| from earlier run |" in text  # mechanisms did not
    for b in run_all.BENCHMARKS:
        assert f'<a id="{b.name}"></a>' in text
    assert "No results yet: run `python benchmarks/monitor.py`." in text
    assert "![time and memory against sequence length](results/scaling.png)" in text
    assert (results / "scaling.png").stat().st_size > 10_000


def test_scaling_series_from_the_results(run_all, tmp_path):
    series = run_all._series(_results(tmp_path))
    assert series["mechanisms"]["time"]["attnkit"] == ([256, 512], [2.56, 5.12])  # forward only
    capture = series["capture"]
    assert capture["time"]["attnkit capture (stats)"] == ([512, 2048], [5120 * 1.02, 20480 * 1.02])
    assert capture["memory"]["eager + weights"] == ([512, 2048], [512, 2048])
    assert "long_inputs" not in series  # no long-input results here


def test_no_speed_results_no_figure(run_all, tmp_path):
    (tmp_path / "results").mkdir()
    assert run_all.plot_scaling(tmp_path / "results") is None
    text = run_all.report(tmp_path / "results", {}, None, {**MACHINE, "date": "today"})
    assert "Scaling with sequence length" not in text
    assert text.count("No results yet") == len(run_all.BENCHMARKS)


def test_selection(run_all):
    quick = run_all.select(None, heavy=False)
    assert quick and not any(b.heavy for b in quick)
    assert len(run_all.select(None, heavy=True)) == len(run_all.BENCHMARKS)
    assert [b.name for b in run_all.select(["llm", "capture"], heavy=False)] == ["llm", "capture"]
    with pytest.raises(SystemExit, match="unknown benchmark.*nope.*expected one of mechanisms"):
        run_all.select(["nope"], heavy=False)
    assert all(b.path.is_file() for b in run_all.BENCHMARKS if b.name != "interpret_speed")
