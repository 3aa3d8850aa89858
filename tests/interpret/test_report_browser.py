"""The report renders in headless Chromium (Debian's package) without console messages."""

import os
import shutil
import subprocess

import pytest
import torch

from attnkit.interpret.report import render_report

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--window-size=1280,1600",
]  # fmt: skip


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def _render(chromium, page, tmp_path):
    html_file, screenshot = tmp_path / "page.html", tmp_path / "page.png"
    html_file.write_text(page)
    result = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={screenshot}", html_file.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return screenshot, console


def test_report_renders_without_console_messages(chromium, tmp_path):
    torch.manual_seed(0)
    tokens = ["[CLS]", "attention", "<img src=x onerror=alert(1)>", "[SEP]"]
    weights = {"layer0": torch.rand(2, 4, 4).softmax(-1)}
    page = render_report(tokens, {"rollout": torch.rand(4)}, weights=weights)
    screenshot, console = _render(chromium, page, tmp_path)
    assert screenshot.stat().st_size > 10_000
    assert console == []


def test_console_errors_would_be_seen(chromium, tmp_path):
    """The check above can fail: a page that throws shows up in the console lines."""
    _, console = _render(chromium, "<script>missingFunction()</script>", tmp_path)
    assert any("missingFunction" in line for line in console)


def test_report_fits_the_window_with_long_layer_names(chromium, tmp_path):
    """Twelve heads of a BERT-style layer name per row: no horizontal scrolling at 1280 px (the
    labels wrap; before, each cell was as wide as its label and the page 2359 px wide)."""
    playwright = pytest.importorskip("playwright.sync_api")
    torch.manual_seed(0)
    weights = {
        f"bert.encoder.layer.{i}.attention.self": torch.rand(12, 6, 6).softmax(-1) for i in range(2)
    }
    page = render_report(list("abcdef"), {"rollout": torch.rand(6)}, weights=weights)
    (tmp_path / "page.html").write_text(page)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=FLAGS[1:5])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.goto((tmp_path / "page.html").as_uri())
        width = tab.evaluate("document.documentElement.scrollWidth")
        browser.close()
    assert width <= 1280
