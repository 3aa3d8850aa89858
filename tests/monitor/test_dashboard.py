"""The dashboard in headless Chromium (Debian's package, driven by Playwright)."""

import os
import shutil
import time

import httpx
import pytest
from monitor_testing import AUTH, TOKEN, make_record

CHROMIUM = "/usr/bin/chromium"
SCRIPT = "<script>window.__pwned = 1</script>"
IMAGE = '"><img src=x onerror="window.__pwned = 2">'


@pytest.fixture(scope="module")
def chromium():
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM) and shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def expect(locator):
    from playwright.sync_api import expect

    return expect(locator)


def open_page(browser, url):
    """A page that records console errors, uncaught exceptions and dialogs."""
    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda dialog: (problems.append("dialog"), dialog.dismiss()))
    page.goto(url)
    return page, problems


def ingest(server):
    now = time.time()
    trace = {
        "tokens": ["Paris", " is", IMAGE], "lookback_ratio": [0.9, 0.5, 0.1],
        "entropy": [1.0, 2.0, 3.0], "sink": [0.1] * 3, "max_weight": [0.5] * 3,
        "retrieval": [0.5, 0.0, 0.0],
        "context": {"start": 2, "tokens": ["The", " capital", " is", " Paris", SCRIPT],
                    "truncated": False},
        "leaned_on": [[[3, 0.5]], [], []],
    }  # fmt: skip
    records = [make_record(i, time=now - 600 * i, version=f"v{i % 2}") for i in range(1, 30)]
    records.append(make_record(0, request_id="drill-me", time=now - 5, model=SCRIPT,
                               tags={"note": IMAGE}, trace=trace))  # fmt: skip
    answer = httpx.post(server.url + "/v1/records/batch", json={"records": records}, headers=AUTH)
    assert answer.json() == {"inserted": 30, "duplicates": 0}


@pytest.mark.slow
def test_dashboard_shows_data_and_drill_down_without_errors(chromium, serve, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "lookback-low"\nsignal = "lookback_ratio"\n'
                     'kind = "threshold"\nop = "<"\nvalue = 0.9\n')  # fmt: skip
    server = serve(rules=rules)
    ingest(server)
    fired = httpx.post(server.url + "/v1/alerts/evaluate", headers=AUTH).json()
    assert fired == {"fired": 1}
    page, problems = open_page(chromium, server.url)
    page.fill("#token", TOKEN)
    page.click("#login button")
    page.wait_for_selector("#records tbody tr")
    assert page.locator("#records tbody tr").count() == 30
    page.wait_for_selector("#chart svg path")
    assert page.locator("#legend li").count() == 1
    page.select_option("#by", "version")
    expect(page.locator("#legend li")).to_have_count(2)
    assert page.locator("#drift tbody tr").count() >= 5
    assert "lookback-low" in page.locator("#alerts tbody tr").first.inner_text()
    # untrusted strings are shown as text, never parsed as HTML
    first = page.locator("#records tbody tr").first
    assert SCRIPT in first.inner_text() and IMAGE in first.inner_text()
    assert "&lt;script&gt;" in page.inner_html("#records tbody")
    first.click()
    page.wait_for_selector("#answer .token")
    assert page.locator("#answer .token").all_inner_texts() == ["Paris", " is", IMAGE]
    assert page.locator("#context .token").count() == 5
    assert page.locator("#context .token.leaned").all_inner_texts() == [" Paris"]
    page.locator("#answer .token").first.click()
    assert page.locator("#context .token.focus").all_inner_texts() == [" Paris"]
    assert page.locator("#drill-id").inner_text() == "drill-me"
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0 and page.locator("script").count() == 1
    assert "updated" in page.inner_text("#status")
    assert problems == []

    # a second visitor: nothing is requested before a token, a wrong one is reported
    page, problems = open_page(chromium, server.url)
    assert "enter the token" in page.inner_text("#status")
    page.fill("#token", "wrong")
    page.click("#login button")
    expect(page.locator("#status")).to_contain_text("refused")
    assert page.locator("#records tbody tr").count() == 0
    page.evaluate("setTimeout(() => missingFunction(), 0)")
    page.wait_for_timeout(200)
    assert any("missingFunction" in problem for problem in problems)  # the check can fail
