"""The package's front door: a light import, the public API, the command line."""

import subprocess
import sys

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
    for name in ["AttentionOutput", "KVCache", "MultiHeadAttention", "SoftAttention"]:
        assert hasattr(attnkit, name), name
    assert attnkit.__version__


def test_cli_version_and_backends():
    runner = CliRunner()
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and attnkit.__version__ in result.output
    result = runner.invoke(app, ["backends"])
    assert result.exit_code == 0
    assert "sdpa" in result.output and "linear    approximate" in result.output
