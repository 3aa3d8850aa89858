"""The HTML report: self-contained, escaped, usable at 2,000 tokens; figures as PNG and SVG."""

import html
import re
import time

import pytest
import torch

from attnkit.interpret.report import MAX_PIXELS, render_report, save_figures
from attnkit.interpret.verdicts import MethodVerdict

VERDICT = MethodVerdict("rollout", "leave-one-out", 0.61, 0.001, 0.3, 0.1, 0.35, 0.05, True)


def _weights(layers, heads, n):
    torch.manual_seed(0)
    return {f"layer{i}": torch.rand(heads, n, n).softmax(-1) for i in range(layers)}


def test_report_is_self_contained_and_escapes_tokens():
    tokens = ["hello", "<script>alert(1)</script>", "world"]
    page = render_report(
        tokens,
        {"rollout": torch.tensor([0.2, 0.5, -0.3])},
        [VERDICT],
        _weights(2, 3, 3),
        title="a <b>test</b>",
    )
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt;b&gt;test&lt;/b&gt;" in page
    assert not re.search(r"(src|href)=[\"']https?:", page)  # nothing fetched from a network
    assert page.count("data:image/png;base64,") == 2 * 3 + 3  # grid, then the last layer's heads
    assert html.escape(VERDICT.sentence) in page and "trust" in page


def test_report_at_2000_tokens_stays_small():
    n = 2000
    tokens = [f"t{i}" for i in range(n)]
    start = time.perf_counter()
    page = render_report(tokens, {"gradient": torch.randn(n)}, [VERDICT], _weights(1, 2, n))
    seconds = time.perf_counter() - start
    assert len(page) < 2_000_000  # pooled heatmaps: the page does not grow with N²
    assert seconds < 30
    assert page.count('class="tok"') == n


def test_report_errors():
    with pytest.raises(ValueError, match="one score per token"):
        render_report(["a", "b"], {"m": torch.zeros(3)})
    with pytest.raises(ValueError, match="head_layer must be one of"):
        render_report(["a"], {}, weights=_weights(1, 1, 1), head_layer="nope")


def test_save_figures(tmp_path):
    written = save_figures(_weights(1, 2, MAX_PIXELS * 2), tmp_path)
    assert sorted(p.name for p in written) == [
        "layer0.head0.png", "layer0.head0.svg", "layer0.head1.png", "layer0.head1.svg",
    ]  # fmt: skip
    assert all(p.stat().st_size > 0 for p in written)
    assert written[1].read_text().lstrip().startswith("<?xml")


def test_save_figures_writes_every_figure_of_the_report(tmp_path):
    """The report's figures: each head's heatmap and each method's token importance."""
    tokens = ["the", "<b>film</b>", "was", "good"]
    explanations = {
        "gradient x input": torch.tensor([0.1, -0.4, 0.0, 0.9]),
        "rollout": torch.rand(4),
    }
    weights = _weights(2, 3, 4)
    page = render_report(tokens, explanations, [VERDICT], weights)
    written = save_figures(weights, tmp_path, explanations, tokens)
    names = {p.name for p in written}
    heads = {f"layer{i}.head{h}" for i in range(2) for h in range(3)}
    stems = heads | {"importance.gradient-x-input", "importance.rollout"}
    assert names == {f"{stem}.{suffix}" for stem in stems for suffix in ("png", "svg")}
    assert page.count("data:image/png;base64,") == len(heads) + 3  # every image has its files
    assert page.count('<div class="tokens">') == len(explanations)  # every strip has a chart
    for path in written:
        head = path.read_bytes()[:64]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<?xml" in head
    long_tokens = [f"t{i}" for i in range(300)]
    assert len(save_figures({}, tmp_path / "long", {"m": torch.randn(300)}, long_tokens)) == 2
    with pytest.raises(ValueError, match="tokens must be given"):
        save_figures({}, tmp_path, explanations)
    with pytest.raises(ValueError, match="one score per token"):
        save_figures({}, tmp_path, {"m": torch.zeros(3)}, tokens)
