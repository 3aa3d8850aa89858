"""The one HTML kit: formatting against hand-written strings, escaping, the page shell, and every
page and view written with it (its stylesheet, one mark for a missing value)."""

import importlib
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit import htmlkit
from attnkit.htmlkit import (
    MARKER,
    MISSING,
    escape,
    format_interval,
    format_number,
    format_percent,
    format_significant,
    header_row,
    page,
    png_data_uri,
    status_badge,
    stylesheet,
)

NAN = float("nan")


def test_format_number_never_prints_minus_zero_and_marks_missing_values():
    assert format_number(0.125) == "0.12"  # 0.125 is exact in binary: round half to even
    assert format_number(0.135, 3) == "0.135"
    assert format_number(-1.5, 0) == "-2"
    assert format_number(-0.0049) == "0.00" and format_number(-0.0) == "0.00"
    assert format_number(-0.0004, 3) == "0.000"
    assert format_number(-0.006) == "-0.01"  # not zero once rounded: the sign stays
    assert format_number(NAN) == format_number(None) == MISSING == "n/a"
    assert format_number(math.inf) == "inf" and format_number(-math.inf) == "-inf"
    assert format_number(np.float32(0.5)) == "0.50" and format_number(3) == "3.00"
    assert format_number(torch.tensor(0.25)) == "0.25"


def test_format_percent_rounds_the_percentage():
    assert format_percent(0.584) == "58%" and format_percent(0.586) == "59%"
    assert format_percent(1.0) == "100%" and format_percent(0.125, 1) == "12.5%"
    assert format_percent(-0.001) == "0%" and format_percent(-0.004, 1) == "-0.4%"
    assert format_percent(NAN) == format_percent(None) == MISSING


def test_format_significant():
    assert format_significant(0.012345) == "0.0123" and format_significant(0.012345, 2) == "0.012"
    assert format_significant(123456.0) == "1.23e+05" and format_significant(2.0, 4) == "2"
    assert format_significant(-0.0) == "0" and format_significant(-0.5) == "-0.5"
    assert format_significant(math.inf, 4) == "inf"
    assert format_significant(NAN) == format_significant(None) == MISSING


def test_format_interval():
    assert format_interval((0.1, 0.25)) == "[0.10, 0.25]"
    assert format_interval((0.1, 0.25), percent=True) == "[10%, 25%]"
    assert format_interval([0.1234, -0.0001], digits=3) == "[0.123, 0.000]"
    assert format_interval((NAN, 0.5)) == f"[{MISSING}, 0.50]"
    with pytest.raises(ValueError, match=r"interval must be \(low, high\), got 3 values"):
        format_interval((0.1, 0.2, 0.3))


def test_escape_and_header_row():
    assert escape("<&\"'") == "&lt;&amp;&quot;&#x27;"
    assert escape(3) == "3"
    assert header_row(["a<b", "c"]) == "<tr><th>a&lt;b</th><th>c</th></tr>"
    assert status_badge("FAIL") == '<span class="status FAIL">FAIL</span>'


def test_page_shell_is_self_contained():
    text = page("a <b> & 'c'", "<p>body</p>", style=".x{color:var(--ak-ok)}")
    assert text.startswith('<!doctype html><html lang="en"><head><meta charset="utf-8">')
    assert text.endswith("</body></html>")
    assert "<title>a &lt;b&gt; &amp; &#x27;c&#x27;</title>" in text
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text).group(1)
    assert policy == "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert f"<style>{MARKER}" in text and ".x{color:var(--ak-ok)}</style>" in text
    scripted = page("t", "", scripts=True)
    assert "script-src 'unsafe-inline'" in scripted
    with pytest.raises(ValueError, match="images must be CSP sources"):
        page("t", "", images="data:; script-src *")


def test_stylesheet_scoped_under_a_view():
    scoped = stylesheet(scope=".v").splitlines()
    assert scoped[0] == MARKER
    assert all(part.strip().startswith(".v") for line in scoped[1:] for part in line.split(","))
    assert "body{" not in "".join(scoped) and any(line.startswith(".v{--ak-fg") for line in scoped)


def test_png_data_uri():
    assert png_data_uri(b"\x89PNG\r\n\x1a\nxyz") == "data:image/png;base64,iVBORw0KGgp4eXo="
    with pytest.raises(ValueError, match="png must be the bytes of a PNG file"):
        png_data_uri(b"GIF89a")


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("attnkit.interpret.verdicts", "format_number"),
        ("attnkit.interpret.verdicts", "format_percent"),
        ("attnkit.views.kit", "escape"),
    ],
)
def test_old_names_warn_and_give_the_kits_function(module, name):
    old_module = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=f"{module}.{name} is deprecated.*htmlkit.{name}"):
        old = getattr(old_module, name)
    assert old is getattr(htmlkit, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError):
            old_module.no_such_name  # noqa: B018


# --- every page and view uses the kit ---------------------------------------------------------


def _uses_kit(text: str) -> None:
    assert text.count(MARKER) >= 1
    assert "--ak-fg" in text


def test_explanation_report_uses_the_kit_and_one_missing_mark():
    from attnkit.interpret.report import render_report
    from attnkit.interpret.verdicts import MethodVerdict

    # no interval given: both show as missing; no signed verdict for "rollout": missing cells
    verdict = MethodVerdict("rollout", "leave-one-out", NAN, 0.001, 0.3, 0.1, 0.35, 0.05, True)
    other = MethodVerdict("other", "leave-one-out", 0.2, 0.01, 0.3, 0.1, 0.35, 0.05, True)
    text = render_report(
        ["a", "b"], {"rollout": torch.tensor([0.5, -0.5])}, [verdict], signed_verdicts=[other]
    )
    _uses_kit(text)
    assert f"<td>{MISSING} [{MISSING}, {MISSING}]</td>" in text  # τ and its interval
    assert f"<td>{MISSING}</td><td>{MISSING}</td>" in text  # no signed verdict
    assert "nan" not in text.lower()


def test_drift_report_uses_the_kit_and_one_missing_mark():
    from attnkit.monitor.drift import drift_report
    from attnkit.monitor.report import render_drift_report

    rng = np.random.default_rng(0)
    reference, current = {"s": rng.normal(0, 1, 200)}, {"s": rng.normal(0.5, 1, 200)}
    report = drift_report(reference, current, method="psi")  # PSI has no p-value
    text = render_drift_report(report, reference, current)
    _uses_kit(text)
    assert f'<td class="num">{MISSING}</td>' in text


def _suite_result():
    from attnkit.llm.checks import CheckResult, Outcome, Status
    from attnkit.llm.suite import ExampleRecord, SuiteResult

    example = ExampleRecord(
        id="q0",
        prompt="context: the sky is blue. question: colour?",
        expected=None,
        answer="blue",
        new_tokens=1,
        context=(1, 3),
        context_tokens=[" sky", " blue"],
        leaned_on=[0.25, 0.75],
        signals={"lookback_ratio": 0.5},
    )
    check = CheckResult(
        "expected answer", "FAIL when missing", Status.PASS, 0.0, [Outcome(None, Status.SKIP)]
    )
    return SuiteResult("suite", "TinyLM", "2026-01-01", {}, [check], [example])


def test_eval_report_and_suite_view_use_the_kit_and_one_missing_mark():
    from attnkit.llm.eval_report import render
    from attnkit.views import suite_view

    result = _suite_result()
    for text in (render(result), suite_view(result).html):
        _uses_kit(text)
        assert f'<td class=num>{MISSING} <span class="status SKIP">SKIP</span></td>' in text


def test_demo_index_uses_the_kit(tmp_path: Path):
    from attnkit.demo.page import render_index
    from attnkit.demo.result import StepResult, Table

    result = StepResult("x", "X", table=Table(("method", "τ"), (("reference", MISSING),)))
    text = render_index([result], tmp_path)
    _uses_kit(text)
    assert "img-src 'self' file:" in text and f"<td>{MISSING}</td>" in text


def test_explanation_view_uses_the_kit_and_one_missing_mark():
    from attnkit.interpret.explanation import Explanation
    from attnkit.interpret.verdicts import MethodVerdict
    from attnkit.views import explanation_view

    verdict = MethodVerdict("rollout", "leave-one-out", 0.4, NAN, 0.3, 0.1, 0.35, 0.05, True)
    explanation = Explanation(
        tokens=[["a", "b"]],
        mask=torch.tensor([[True, True]]),
        predicted=torch.tensor([0]),
        scores={"rollout": torch.tensor([[0.5, 0.25]])},
        verdicts=[verdict],
        weights={},
    )
    text = explanation_view(explanation).html
    _uses_kit(text)
    assert f"rollout {MISSING}" in text  # the p-value
    assert f"[{MISSING}, {MISSING}]" in text  # intervals not given


def test_shade_clips_the_opacity_and_token_span_escapes():
    assert htmlkit.shade(htmlkit.WEIGHT, 0.5) == "rgba(230,81,0,0.500)"
    assert htmlkit.shade(htmlkit.NEGATIVE, 1.7) == "rgba(37,99,235,1.000)"
    assert htmlkit.shade(htmlkit.POSITIVE, -0.2) == "rgba(220,38,38,0.000)"
    span = htmlkit.token_span("<b>", "rgba(1,2,3,0.100)", 'a "title"', ' data-t="3"')
    assert span == (
        '<span class="tok" data-t="3" style="background:rgba(1,2,3,0.100)" '
        'title="a &quot;title&quot;">&lt;b&gt;</span>'
    )


def test_view_scripts_shade_tokens_with_the_kit_colours():
    from attnkit.views.kit import wrap

    html = str(wrap("probe", "<p>x</p>", "function(root, d){}", {}))
    expected = {
        "weight": htmlkit.WEIGHT,
        "positive": htmlkit.POSITIVE,
        "negative": htmlkit.NEGATIVE,
    }
    for name, (r, g, b) in expected.items():
        assert f'"{name}":[{r},{g},{b}]' in html
    assert "function tokenShade(name,alpha)" in html
