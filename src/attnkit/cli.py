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
def demo(
    length: int = typer.Option(256, min=2, help="Sequence length of the tour's batch."),
) -> None:
    """Run every attention mechanism once and check it against its reference."""
    from rich.console import Console
    from rich.table import Table

    from attnkit.demo import mechanisms_tour

    console = Console()
    table = Table(title=f"attnkit mechanisms, causal GQA self-attention over {length} tokens")
    for column in ("mechanism", "what", "max |error| vs reference", "ms"):
        table.add_column(column)
    with console.status("running the mechanisms"):
        steps = mechanisms_tour(length)
    for step in steps:
        error = "" if step.max_abs_error is None else f"{step.max_abs_error:.2e}"
        table.add_row(step.name, step.detail, error, f"{step.milliseconds:.1f}")
    console.print(table)


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
