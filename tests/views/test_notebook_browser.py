"""The docs notebook runs in a real kernel (nbclient + ipykernel), exports to HTML (nbconvert), and
its views work in headless Chromium: no console message, no request leaves the page, every view is
there, and the recording's model view and the trace's tokens react to a click."""

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
nbconvert = pytest.importorskip("nbconvert")
playwright = pytest.importorskip("playwright.sync_api")

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "views.ipynb"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The notebook executed in a fresh kernel and exported to one HTML file."""
    directory = tmp_path_factory.mktemp("notebook")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env_path = os.environ.get("PYTHONPATH", "")
    src = str(Path(__file__).resolve().parents[2] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, env_path) if p)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        client = nbclient.NotebookClient(
            notebook,
            timeout=240,
            kernel_name="python3",
            resources={"metadata": {"path": directory}},
        )
        client.execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    # nbconvert's page loads require.js and MathJax from a CDN: no view needs them, and the test
    # runs offline, so both point at an empty script (every other request is checked below)
    exporter = nbconvert.HTMLExporter(
        require_js_url="data:text/javascript,", mathjax_url="data:text/javascript,"
    )
    body, _ = exporter.from_notebook_node(notebook)
    page = directory / "views.html"
    page.write_text(body, encoding="utf-8")
    return notebook, page


@pytest.mark.slow
def test_every_code_cell_displays_without_error(exported):
    notebook, _ = exported
    outputs = [cell.outputs for cell in notebook.cells if cell.cell_type == "code"]
    assert not [o for cell in outputs for o in cell if o.output_type == "error"]
    shown = [o for cell in outputs for o in cell if "text/html" in o.get("data", {})]
    kinds = [
        kind
        for kind in ("recording", "explanation", "trace", "attribution", "suite")
        for o in shown
        if f"attnkit-view attnkit-{kind}" in o["data"]["text/html"]
    ]
    assert kinds == ["recording", "explanation", "trace", "attribution", "suite"]


@pytest.mark.slow
def test_views_work_in_chromium(exported, chromium, tmp_path):
    _, page = exported
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=ARGS)
        tab = browser.new_page(viewport={"width": 1200, "height": 900})
        console, outside = [], []
        tab.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        tab.on("pageerror", lambda error: console.append(f"page error: {error}"))

        def block(route):
            if not route.request.url.startswith(("file:", "data:")):
                outside.append(route.request.url)
            route.abort() if route.request.url.startswith("http") else route.continue_()

        tab.route("**/*", block)
        tab.goto(page.as_uri())
        recording = tab.locator(".attnkit-recording")
        assert recording.count() == 1
        assert recording.get_attribute("data-head") == "0"  # the script ran: last layer, head 0
        assert recording.get_attribute("data-layer") == "5"
        picture = recording.locator("img.model-view")
        box = picture.bounding_box()
        # the model view: 6 rows (layers) x 12 columns (heads); click layer 1, head 3
        picture.click(position={"x": box["width"] * 3.5 / 12, "y": box["height"] * 1.5 / 6})
        assert (recording.get_attribute("data-layer"), recording.get_attribute("data-head")) == (
            "1",
            "3",
        )
        assert (
            "encoder.layer.1.attention.self · head 3" in recording.locator(".selected").inner_text()
        )
        recording.locator(".head-view .tok").nth(2).hover()
        info = recording.locator(".info").inner_text()
        assert info.startswith('query 2 "cat": largest weight')
        lit = recording.locator(".head-view .tok[style*='rgba']").count()
        assert lit >= 1
        trace = tab.locator(".attnkit-trace")
        trace.locator(".answer-tokens .tok").nth(0).click()
        assert "(pinned)" in trace.locator(".info").inner_text()
        attribution = tab.locator(".attnkit-attribution")
        attribution.locator("select.method").select_option("2")  # gradient x input
        attribution.locator(".answer .tok").nth(0).click()
        assert attribution.get_attribute("data-method") == "2"
        assert '"paris" (pinned)' in attribution.locator(".info").inner_text()
        suite = tab.locator(".attnkit-suite details").first
        suite.locator("summary").click()
        assert suite.evaluate("element => element.open")
        assert tab.locator(".attnkit-explanation table").count() == 1
        tab.screenshot(path=str(tmp_path / "views.png"), full_page=True)
        browser.close()
    assert console == []
    assert outside == []
