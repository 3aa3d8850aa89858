"""The evaluation report: escaped, self-contained, and it renders in headless Chromium."""

import os
import re
from pathlib import Path

import pytest

from attnkit.llm.checks import CheckResult, Outcome, Status
from attnkit.llm.eval_report import render
from attnkit.llm.suite import ExampleRecord, SuiteResult

EVIL = "<script>window.pwned = 1</script>"
CHROMIUM = Path("/usr/bin/chromium")


def result() -> SuiteResult:
    examples = [
        ExampleRecord(
            id=f"q{i}{EVIL if i == 1 else ''}",
            prompt=f"context: {EVIL} the sky is blue. question: colour?",
            expected="blue" if i == 0 else None,
            answer=f'blue & "{EVIL}"' if i == 1 else "blue",
            new_tokens=3,
            context=(2, 6),
            context_tokens=["<b>", " the", " sky", " blue"],
            leaned_on=[0.1, 0.4, 0.2, 0.0],
            signals={"lookback_ratio": 0.61, "entropy": 2.5, "sink": 0.1, "max_weight": 0.3},
        )
        for i in range(3)
    ]
    checks = [
        CheckResult("mean lookback ratio", "FAIL < 0.2", Status.PASS, 0.0,
                    [Outcome(0.61, Status.PASS)] * 3),
        CheckResult(f"refusal {EVIL}", "WARN when refusing", Status.WARN, 0.0,
                    [Outcome(1.0, Status.WARN), Outcome(0.0, Status.PASS),
                     Outcome(0.0, Status.PASS)]),
        CheckResult("expected answer", "FAIL when missing", Status.FAIL, 1.0,
                    [Outcome(0.0, Status.FAIL), Outcome(None, Status.SKIP),
                     Outcome(None, Status.SKIP)]),
    ]  # fmt: skip
    return SuiteResult(f"suite {EVIL}", "TinyLM", "2026-01-01T00:00:00+00:00",
                       {"max_new_tokens": 3}, checks, examples)  # fmt: skip


def test_report_escapes_every_text_and_loads_nothing():
    html = render(result())
    assert "<script" not in html.lower()  # the report has no script of its own either
    # title, heading, 3 prompts, an id, an answer and a check name twice each
    assert html.count("&lt;script&gt;window.pwned = 1&lt;/script&gt;") == 11
    assert "&lt;b&gt;" in html and "<b>\u003c" not in html
    assert "blue &amp; &quot;" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from the network
    assert "@import" not in html and "url(" not in html


def test_report_content():
    res = result()
    html = render(res)
    assert res.status == Status.FAIL and res.failed
    assert [res.example_status(i) for i in range(3)] == [Status.FAIL, Status.PASS, Status.PASS]
    rows = re.findall(r'<tr class="check">.*?</tr>', html)
    assert len(rows) == 3
    assert (
        'class="status FAIL">FAIL' in rows[2] and "100%" in rows[2] and "0 / 0 / 1 / 2" in rows[2]
    )
    assert len(re.findall(r'<tr class="example">', html)) == 3
    assert html.count('<section class="example"') == 3
    # shading relative to the most-leaned-on token (0.4), exact weight in the title
    shades = re.findall(r"rgba\(230,81,0,([0-9.]+)\)\" title=\"weight ([0-9.e-]+)\"", html)
    assert shades[:4] == [("0.250", "0.1"), ("1.000", "0.4"), ("0.500", "0.2"), ("0.000", "0")]
    assert "n/a" in html  # skipped outcomes have no value


def test_report_renders_in_headless_chromium(tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must have /usr/bin/chromium for the report test")
        pytest.skip("no /usr/bin/chromium on this machine (install Debian's chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    path = tmp_path / "report.html"
    result().to_html(path)
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        assert page.title() == f"suite {EVIL}: FAIL"
        assert page.locator("tr.check").count() == 3
        assert page.locator("tr.example").count() == 3
        assert page.locator("section.example").count() == 3
        assert page.evaluate("window.pwned") is None  # the injected script stayed text
        heading = page.locator("h1").inner_text()
        assert EVIL in heading  # shown as text
        tokens = page.locator("#example-0 .context span")
        assert tokens.count() == 4 and tokens.nth(0).inner_text() == "<b>"
        page.locator("tr.example a").nth(2).click()
        assert page.evaluate("location.hash") == "#example-2"
        browser.close()
    assert errors == []
    assert requests == [path.as_uri()]
