"""The ``attnkit`` command-line tool (Typer)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="attnkit",
    help="Attention for machine learning: mechanisms, models, interpretability, LLM monitoring.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print attnkit's version and the versions it runs on."""
    import torch

    import attnkit

    typer.echo(f"attnkit {attnkit.__version__} (torch {torch.__version__})")


@app.command()
def backends() -> None:
    """List the registered attention backends."""
    from attnkit.attention import backends as registry

    for name in registry.available():
        if name == "auto":
            typer.echo("auto      sdpa, or math when weights are asked for")
            continue
        entry = registry.get(name)
        kind = "exact" if entry.exact else "approximate"
        weights = "returns weights" if entry.weights else "no weights"
        typer.echo(f"{name:<9} {kind}, {weights}")
