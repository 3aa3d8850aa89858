"""The package's front door: a light import, the public API, the command line."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import attnkit
from attnkit.cli import app

HEAVY = [
    "transformers",
    "scipy",
    "sklearn",
    "matplotlib",
    "entmax",
    "captum",
    "fastapi",
    "sqlalchemy",
    "typer",
    "rich",
    "pandas",
]


def test_import_needs_only_torch_and_numpy():
    code = f"import sys, attnkit; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_public_api():
    for name in [
        "AttentionOutput",
        "HardAttention",
        "KVCache",
        "MultiHeadAttention",
        "SoftAttention",
    ]:
        assert hasattr(attnkit, name), name
    assert attnkit.__version__


def test_cli_version_and_backends():
    runner = CliRunner()
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and attnkit.__version__ in result.output
    result = runner.invoke(app, ["backends"])
    assert result.exit_code == 0
    assert "sdpa" in result.output and "linear    approximate" in result.output


def test_cli_demo_checks_every_backend(tmp_path):
    result = CliRunner().invoke(
        app, ["demo", "--only", "tour", "--length", "16", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    for name in ("math", "sdpa", "linear", "kv cache", "capture", "sparsemax"):
        assert name in result.output


def test_demo_tour_exact_steps_agree_with_the_reference():
    from attnkit.demo import mechanisms_tour

    steps = {step.name: step for step in mechanisms_tour(length=24)}
    assert steps["sdpa"].max_abs_error < 1e-5
    assert steps["kv cache"].max_abs_error < 1e-5
    assert steps["capture"].max_abs_error < 1e-5
    assert steps["linear"].max_abs_error > 1e-3  # an approximation, and the tour says so
    assert "approximation" in steps["linear"].detail


def test_readme_examples_run(capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = [part.split("```", 1)[0] for part in readme.split("```python\n")[1:]]
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == [
        "torch.Size([4, 32]) torch.Size([4, 10])",
        "torch.Size([2, 8, 12, 12])",
        "True",
        "['layers.0.self_attn', 'layers.1.self_attn']",
        "torch.Size([1, 4, 20])",
    ]


def test_cli_explain_writes_a_report(tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["explain", "minilm", "a fine film", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "leave-one-out" in result.output and out.is_file()
    assert "fine" in out.read_text()

    def words(output):  # the error box wraps lines and draws borders
        return " ".join(output.replace("│", " ").split())

    bad = CliRunner().invoke(app, ["explain", str(tmp_path), "text"])
    assert bad.exit_code == 2 and "is none of these" in words(bad.output)
    assert "an attnkit checkpoint" in words(bad.output)
    beyond = CliRunner().invoke(app, ["explain", "minilm", "text", "--example", "3"])
    assert beyond.exit_code == 2 and "--example must be below" in words(beyond.output)
