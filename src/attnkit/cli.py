"""The ``attnkit`` command-line tool (Typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="attnkit",
    help="Attention for machine learning: mechanisms, models, interpretability, LLM monitoring.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the results and index.html.")] = Path(
        "attnkit-demo"
    ),
    serve: Annotated[
        bool, typer.Option(help="Afterwards, serve the monitor's dashboard on the run's data.")
    ] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of --serve.")] = 8000,
    quick: Annotated[
        bool, typer.Option(help="Tiny sizes: every step runs in seconds, nothing learns well.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only this step (repeatable): tour, text, vision, series, explain, llm, "
            "monitor."
        ),
    ] = None,
    length: Annotated[
        int | None, typer.Option(min=2, help="Sequence length of the mechanisms tour.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seeds every model and data draw.")] = 0,
    threads: Annotated[
        int, typer.Option(min=1, help="torch CPU threads (1 keeps runs reproducible).")
    ] = 1,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Tour attnkit on bundled data and models; OUT/index.html links every result.

    Checks every mechanism against its reference; trains soft, hard,
    self- and multi-head attention models beside no-attention baselines;
    explains a pretrained MiniLM with faithfulness verdicts; runs the LLM
    signals and hallucination detector on the retrieval testbed, logged
    to an SQLite monitor. About 2-3 minutes on 2 CPU cores; a re-run
    overwrites the results.
    """
    import dataclasses

    from rich.console import Console
    from rich.table import Table

    from attnkit.demo import DemoError, DemoSizes, dashboard_app, run_demo

    console = Console()
    sizes = DemoSizes.quick() if quick else DemoSizes.full()
    if length is not None:
        sizes = dataclasses.replace(sizes, tour_length=length)

    def show(result) -> None:
        style = {"ok": "green", "skipped": "yellow"}.get(result.status, "red")
        console.print(
            f"[bold]{result.title}[/bold] [{style}]{result.status}[/{style}] "
            f"({result.seconds:.1f} s)"
        )
        if result.table is not None:
            table = Table(*result.table.columns)
            for row in result.table.rows:
                table.add_row(*row)
            console.print(table)
        for note in result.notes:
            console.print(f"  - {note.replace('**', '')}", markup=False, highlight=False)

    try:
        run = run_demo(
            out,
            sizes,
            steps=only,
            seed=seed,
            threads=threads,
            console=console,
            progress=progress,
            on_step=show,
        )
    except DemoError as error:
        raise typer.BadParameter(str(error), param_hint=error.option) from error
    console.print(f"done in {run.seconds:.0f} s; open {run.index}")
    if not run.ok:
        console.print(f"[red]failed steps: {', '.join(run.failed)}[/red]")
        raise typer.Exit(1)
    if serve:
        import uvicorn

        try:
            app_ = dashboard_app(run.out)
        except DemoError as error:
            raise typer.BadParameter(str(error), param_hint=error.option) from error
        console.print(f"monitor dashboard: http://127.0.0.1:{port}/ (Ctrl+C stops it)")
        uvicorn.run(app_, host="127.0.0.1", port=port)


@app.command()
def explain(
    model: Annotated[
        str,
        typer.Argument(
            help="'minilm' (the bundled all-MiniLM-L6-v2 with an untrained two-class head), a "
            "Hugging Face sequence-classifier directory, an attnkit text-classifier "
            "checkpoint (the --out directory of `attnkit train text`, or its checkpoint/), or a "
            "Hugging Face causal LM or encoder-decoder directory with its tokenizer (then TEXTS "
            "is one prompt and its answer's tokens are attributed to the prompt's)."
        ),
    ],
    texts: Annotated[list[str], typer.Argument(help="One or more texts to explain.")],
    out: Annotated[Path, typer.Option(help="Where to write the report.")] = Path(
        "attnkit-explain.html"
    ),
    example: Annotated[int, typer.Option(min=0, help="Which text the report shows.")] = 0,
    figures: Annotated[
        Path | None,
        typer.Option(help="Also write every figure of that text here, as PNG and SVG."),
    ] = None,
    answer: Annotated[
        str | None,
        typer.Option(help="Generative models: the answer to attribute (default: generated)."),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            help="Generative models: the part of the prompt whose sentences are hidden "
            "one at a time (default: the whole prompt)."
        ),
    ] = None,
    max_new_tokens: Annotated[
        int, typer.Option(min=1, help="Generative models: the longest generated answer.")
    ] = 16,
) -> None:
    """Explain a classifier's predictions, or a generated answer's tokens, and say which
    explanations can be trusted."""
    from rich.console import Console
    from rich.progress import Progress

    from attnkit.interpret.explanation import explain as run_explain
    from attnkit.interpret.loading import load_explainable
    from attnkit.llm.attribution import load_generator

    console = Console()
    with console.status("loading the model"):
        generator = load_generator(model)
    if generator is not None:
        _explain_answer(console, generator, texts, answer, context, max_new_tokens, out, model)
        return
    if answer is not None or context is not None:
        raise typer.BadParameter(
            "--answer and --context are for generative models; MODEL is a classifier",
            param_hint="--answer/--context",
        )
    if example >= len(texts):
        raise typer.BadParameter(f"--example must be below the number of texts ({len(texts)})")
    try:
        with console.status("loading the model"):
            target = load_explainable(model)
    except (ValueError, ImportError) as error:
        raise typer.BadParameter(str(error), param_hint="MODEL") from error
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"explaining {len(texts)} text(s)", total=None)

        def advance(step: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=step)

        result = run_explain(target.model, target.tokenizer, texts, progress=advance)
    console.print(f"verdicts pooled over n={len(texts)} text(s), 95% bootstrap intervals:")
    signed = {v.method: v for v in result.signed_verdicts}
    for verdict in result.verdicts:
        style = {"trusted": "green", "flagged": "red"}.get(verdict.verdict, "yellow")
        console.print(f"[{style}]{verdict.sentence}[/{style}]", markup=True, highlight=False)
        if verdict.method in signed:
            other = signed[verdict.method]
            console.print(f"  with signed τ: {other.numbers}: {other.label}", highlight=False)
    out.write_text(result.report(example, title=f"attnkit explain: {model}"))
    console.print(f"report: {out}")
    if figures is not None:
        written = result.save_figures(figures, example)
        console.print(f"figures: {len(written)} files in {figures}")


@app.command()
def faithfulness(
    run: Annotated[
        Path,
        typer.Argument(help="The --out directory of `attnkit train text --data FILE`."),
    ],
    data: Annotated[
        Path, typer.Option(help="The data file the run was trained on (its test split is used).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write faithfulness.md/.json/.png. Default: RUN."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use only the first LIMIT test examples.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Split seed (default: the run's, from RUN/data.json); also seeds "
            "the random ranking and the bootstrap."
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="File option KEY=VALUE, as for train (default: the run's)."
        ),
    ] = None,
) -> None:
    """Jain & Wallace's faithfulness protocol on a trained text run's test split.

    Writes the table (mean ± sd of Kendall's τ per pair of methods over
    magnitudes and signed, ERASER comprehensiveness/sufficiency/AOPC, verdicts
    with n and 95% bootstrap intervals) as markdown, JSON and a plot.
    """
    from attnkit.interpret.replication import run_faithfulness
    from attnkit.tasks import parse_options

    try:
        table, paths = run_faithfulness(
            run, data, out=out, limit=limit, seed=seed, options=parse_options(option or [])
        )
    except (ValueError, ImportError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(table.markdown())
    for path in paths:
        typer.echo(f"wrote {path}")


def _explain_answer(console, generator, texts, answer, context, max_new_tokens, out, name) -> None:
    """``attnkit explain`` on a causal LM or encoder-decoder: attribution of the answer's tokens."""
    from attnkit.llm.attribution import attribute

    if len(texts) != 1:
        raise typer.BadParameter(
            f"a generative model takes one prompt, got {len(texts)} texts", param_hint="TEXTS"
        )
    if context is not None and context not in texts[0]:
        raise typer.BadParameter("--context must be a part of the prompt", param_hint="--context")
    model, tokenizer = generator
    try:
        with console.status("attributing the answer's tokens"):
            result = attribute(
                model, tokenizer, texts[0], answer, context, max_new_tokens=max_new_tokens
            )
    except (ValueError, TypeError) as error:
        raise typer.BadParameter(str(error)) from error
    console.print(
        f"answer: {''.join(result.answer_tokens)!r} ({len(result.answer_tokens)} tokens); "
        f"verdicts over its n={len(result.answer_tokens)} tokens, 95% bootstrap intervals:",
        highlight=False,
    )
    for verdict in result.verdicts:
        style = {"trusted": "green", "flagged": "red"}.get(verdict.verdict, "yellow")
        console.print(f"[{style}]{verdict.sentence}[/{style}]", markup=True, highlight=False)
    out.write_text(result.report(title=f"attnkit explain: {name}"), encoding="utf-8")
    console.print(f"report: {out}")


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


@app.command()
def serve(
    db: Annotated[
        str | None,
        typer.Option(help="Database URL (default: ATTNKIT_DB, else sqlite:///attnkit.db)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    rules: Annotated[Path | None, typer.Option(help="TOML file of alert rules.")] = None,
    token: Annotated[
        list[str] | None,
        typer.Option(help="Bearer token (repeatable); prefer the ATTNKIT_TOKENS env variable."),
    ] = None,
    retention_days: Annotated[float | None, typer.Option(help="Delete older records.")] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="Host header to accept besides loopback names (repeatable)."),
    ] = None,
    upgrade: Annotated[
        bool, typer.Option(help="Apply pending database migrations first (back it up before).")
    ] = False,
) -> None:
    """Run the LLM monitoring service: REST API, Prometheus /metrics and the dashboard."""
    import uvicorn

    from attnkit.monitor.server import create_app
    from attnkit.monitor.settings import Settings
    from attnkit.monitor.store import SchemaError

    hosts = list(allowed_host or ())
    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        hosts.append(host)  # the name clients use to reach this interface
    try:
        settings = Settings.from_env(
            db=db, rules=rules, tokens=tuple(token) if token else None,
            retention_days=retention_days, allowed_hosts=tuple(hosts) or None,
            upgrade=upgrade or None,
        )  # fmt: skip
        if not settings.tokens and host not in ("127.0.0.1", "localhost", "::1"):
            raise typer.BadParameter("serving beyond loopback needs a token (ATTNKIT_TOKENS)")
        application = create_app(settings)
    except (ValueError, TypeError, OSError, SchemaError) as error:
        raise typer.BadParameter(str(error)) from error
    except Exception as error:  # e.g. a database that cannot be reached: a message, no traceback
        raise typer.BadParameter(f"cannot start the service: {error}") from error
    uvicorn.run(application, host=host, port=port)


@app.command("eval")
def eval_prompts(
    prompts: Annotated[Path, typer.Argument(help="JSONL: id, prompt, context[, expected].")],
    model: Annotated[Path, typer.Option(help="A Hugging Face causal LM directory + tokenizer.")],
    detector: Annotated[
        Path | None,
        typer.Option(help="A fitted detector: JSON from Detector.save() or LookbackLens.save()."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write eval.json and eval.html.")] = Path(
        "attnkit-eval"
    ),
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 32,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
) -> None:
    """Evaluate a causal LM through its attention: JSON result and HTML report in OUT.

    Exit code 1 when any check FAILs the dataset, 0 otherwise.
    """
    from attnkit.llm.suite import eval_command

    try:
        result = eval_command(prompts, model, detector, out, max_new_tokens, batch_size)
    except (ValueError, OSError) as error:
        raise typer.BadParameter(str(error)) from error
    if result.failed:
        raise typer.Exit(1)


monitor_app = typer.Typer(help="LLM monitoring without the server.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("report")
def monitor_report(
    db: Annotated[str, typer.Option(help="Database URL, e.g. sqlite:///attnkit.db.")],
    out: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path("drift.html"),
    reference_days: Annotated[float, typer.Option(min=0.001)] = 7.0,
    current_days: Annotated[float, typer.Option(min=0.001)] = 1.0,
    model: Annotated[str | None, typer.Option(help="Only this model's records.")] = None,
    version: Annotated[str | None, typer.Option(help="Only this version's records.")] = None,
) -> None:
    """Write an HTML drift report: the last CURRENT-DAYS against the REFERENCE-DAYS before."""
    from sqlalchemy.exc import SQLAlchemyError

    from attnkit.monitor.drift import drift_report
    from attnkit.monitor.report import render_drift_report
    from attnkit.monitor.store import SchemaError, Store

    try:
        store = Store(db, read_only=True)  # only reads: a read-only file system is fine
        try:
            store.check_schema()
            reference, current = store.windows(
                current_days=current_days, reference_days=reference_days, model=model,
                version=version,
            )  # fmt: skip
        finally:
            store.close()
    except (ValueError, SchemaError, SQLAlchemyError) as error:
        raise typer.BadParameter(str(error).splitlines()[0]) from error
    usable = [name for name in reference if len(reference[name]) and len(current[name])]
    if not usable:
        raise typer.BadParameter("no records in the reference or the current window")
    reference = {name: reference[name] for name in usable}
    current = {name: current[name] for name in usable}
    report = drift_report(reference, current)
    tags = {k: v for k, v in (("model", model), ("version", version)) if v is not None}
    out.write_text(render_drift_report(report, reference, current, tags=tags))
    drifted = [name for name, result in report.results.items() if result.drifted]
    typer.echo(f"drifted: {', '.join(drifted) or 'none'}; report: {out}")


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="text, dates, mnist, digits, co2, sunspots, taylor.")],
    attention: Annotated[str, typer.Option(help="soft, hard, multihead or none (baseline).")] = (
        "soft"
    ),
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    weight_decay: Annotated[float, typer.Option(min=0.0)] = 0.0,
    patience: Annotated[int, typer.Option(min=0, help="Early stopping; 0 turns it off.")] = 5,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Step budget.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    fraction: Annotated[float, typer.Option(help="Share of the training split.")] = 1.0,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Your own data file for the text task: .csv, .tsv (header row) or .jsonl. "
            "File options (-o): text_column=text, label_column=label, split_column (default: "
            "a 'split' or 'exp_split' column if there is one, values train, dev|validation|val, "
            "test), val_fraction=0.1 and test_fraction=0.1 (without a split column; 0 leaves "
            "the split empty; the shuffle uses --seed), min_count=1, max_length=256, "
            "lowercase=true."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Default: runs/<task>-<attention>.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT's checkpoint.")] = False,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Model or file option KEY=VALUE (repeatable), e.g. -o hidden=64, "
            "-o encoder=lstm, -o embeddings=glove.txt (or minilm), -o freeze_embeddings=true.",
        ),
    ] = None,
    progress: Annotated[
        bool, typer.Option(help="Show a progress bar (off: one line per epoch).")
    ] = True,
) -> None:
    """Train a task's model (attention or baseline): checkpoint, metrics JSON and loss plot."""
    from attnkit.tasks import parse_options
    from attnkit.tasks.command import train_task
    from attnkit.train import TrainConfig

    try:
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
            patience=patience or None,
            max_steps=max_steps,
            progress=progress,
            checkpoint_dir=out if out is not None else Path("runs") / f"{task}-{attention}",
        )
        train_task(
            task,
            attention=attention,
            config=config,
            fraction=fraction,
            data=data,
            resume=resume,
            options=parse_options(option or []),
        )
    except (ValueError, ImportError) as error:
        raise typer.BadParameter(str(error)) from error
