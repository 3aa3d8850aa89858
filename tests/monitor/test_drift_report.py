"""The HTML drift report: content, escaping of untrusted text, and headless Chromium."""

import html.parser
import os
import re
from pathlib import Path

import numpy as np
import pytest

from attnkit.monitor.drift import drift_report
from attnkit.monitor.report import HISTOGRAM_BINS, render_drift_report, write_drift_report

CHROMIUM = "/usr/bin/chromium"
EVIL_SIGNAL = "<script>alert(1)</script>"
EVIL_TAG = '"><img src=x onerror=alert(2)>'


class _Page(html.parser.HTMLParser):
    """Collects elements (tag, attributes) and the text of table cells."""

    def __init__(self, page):
        super().__init__()
        self.elements, self.cells, self._in_cell = [], [], False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag == "td":
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data

    def tags(self, name):
        return [attrs for tag, attrs in self.elements if tag == name]


def _windows(seed=0):
    rng = np.random.default_rng(seed)
    reference = {
        "lookback_ratio": rng.normal(0.6, 0.1, 400),
        EVIL_SIGNAL: rng.normal(0.0, 1.0, 400),
        "detector_score": np.full(5, np.nan),
    }
    current = {
        "lookback_ratio": rng.normal(0.45, 0.1, 300),
        EVIL_SIGNAL: rng.normal(0.0, 1.0, 300),
        "detector_score": np.array([0.2, 0.9]),
    }
    return reference, current


@pytest.fixture
def page():
    reference, current = _windows()
    report = drift_report(reference, current)
    return render_drift_report(
        report, reference, current, title="drift <b>v2</b>", tags={"model": EVIL_TAG}
    )


def test_untrusted_text_is_escaped(page):
    assert "<script" not in page.lower() and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<title>drift &lt;b&gt;v2&lt;/b&gt;</title>" in page
    parsed = _Page(page)
    assert not any(name.startswith("on") for _, attrs in parsed.elements for name in attrs)


def test_table_holds_every_tested_signal(page):
    parsed = _Page(page)
    rows = [parsed.cells[i : i + 8] for i in range(0, len(parsed.cells), 8)]
    reference, current = _windows()
    report = drift_report(reference, current)
    assert len(rows) == len(report.results) == 2
    for row, (name, result) in zip(rows, report.results.items(), strict=True):
        assert row[0] == name and row[1] == result.method == "ks"
        assert row[2] == f"{result.statistic:.4g}" and row[3] == f"{result.p_value:.4g}"
        assert row[4] == "p <= 0.05"
        assert row[5] == ("drift" if result.drifted else "no drift")
        assert row[6:] == [str(result.reference_size), str(result.current_size)]
    assert [row[5] for row in rows] == ["drift", "no drift"]
    assert "detector_score: no values in the reference window" in page
    assert "1 of 2 signals drifted (share 0.50; dataset drift when &ge; 0.5)" in page


def test_histograms_are_inline_svg_with_the_window_shares():
    # reference: 3 of 4 values in the first bin, 1 in the last; current: all in the last bin
    reference, current = {"s": [0.0, 0.0, 0.0, 1.0]}, {"s": [1.0, 1.0]}
    report = drift_report(reference, current)
    parsed = _Page(render_drift_report(report, reference, current))
    (svg,) = parsed.tags("svg")
    assert svg["xmlns"] == "http://www.w3.org/2000/svg"
    rects = parsed.tags("rect")
    assert len(rects) == 2 * HISTOGRAM_BINS
    heights = [float(r["height"]) for r in rects]
    plot = max(heights)  # the current window's last bin holds 100%, the tallest bar
    reference_bars, current_bars = heights[:HISTOGRAM_BINS], heights[HISTOGRAM_BINS:]
    assert current_bars[-1] == plot and sum(current_bars[:-1]) == 0
    assert reference_bars[0] == pytest.approx(0.75 * plot, abs=0.1)
    assert reference_bars[-1] == pytest.approx(0.25 * plot, abs=0.1)
    assert sum(reference_bars[1:-1]) == 0


def test_no_network_and_no_scripts(page):
    links = re.findall(r'(?:src|href|action)\s*=\s*"([^"]*)"', page)
    assert links and all(link.startswith("#") for link in links)
    assert 'http-equiv="Content-Security-Policy" content="default-src \'none\'' in page
    assert "@import" not in page and "url(" not in page


def test_signal_without_values_in_the_mappings():
    report = drift_report({"a": [1.0, 2.0]}, {"a": [1.0, 3.0]})
    page = render_drift_report(report, {}, {})
    assert "No finite values to plot." in page and "<svg" not in page


def test_write_drift_report(tmp_path):
    reference, current = _windows()
    path = tmp_path / "drift.html"
    report = write_drift_report(path, reference, current, method="psi", tags={"model": "m"})
    assert {r.method for r in report.results.values()} == {"psi"}
    assert path.read_text(encoding="utf-8") == render_drift_report(
        report, reference, current, tags={"model": "m"}
    )


# --- headless Chromium -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


def _open(browser, path):
    """Open a file; return the page and the console messages, page errors and requests."""
    page = browser.new_page()
    seen = {"console": [], "errors": [], "requests": []}
    page.on("console", lambda message: seen["console"].append(message.text))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, seen


def test_report_opens_in_chromium_without_console_messages(browser, tmp_path, page):
    path = tmp_path / "drift.html"
    path.write_text(page, encoding="utf-8")
    view, seen = _open(browser, path)
    assert seen == {"console": [], "errors": [], "requests": [path.as_uri()]}
    assert view.locator("script").count() == 0 and view.locator("img").count() == 0
    assert view.locator("tbody tr").count() == 2
    assert view.locator("svg rect").count() == 2 * 2 * HISTOGRAM_BINS
    assert view.locator("h2").all_inner_texts()[1:] == ["lookback_ratio", EVIL_SIGNAL]
    assert EVIL_TAG in view.locator(".tags").inner_text()
    box = view.locator("svg").first.bounding_box()
    assert box["width"] > 300 and box["height"] > 100
    view.close()


def test_console_errors_would_be_seen(browser, tmp_path):
    """The check above can fail: a script error and a fetch are both seen."""
    path = tmp_path / "bad.html"
    path.write_text("<script>missingFunction()</script><img src='missing.png'>")
    view, seen = _open(browser, path)
    assert any("missingFunction" in error for error in seen["errors"])
    assert (tmp_path / "missing.png").as_uri() in seen["requests"]
    view.close()
