"""Run the demo's steps with progress bars, write ``index.html``, serve the monitor dashboard.

``run_demo(out)`` runs every step of :data:`STEPS` in order (each one's own bar under an overall
bar), catches a step that needs a missing optional extra (``skipped``) or that fails
(``failed``, the error in its notes) so that the others still run, writes ``out/summary.json``
and ``out/index.html`` and returns a :class:`DemoRun`. Runs are reproducible: the same seed gives
the same numbers (one thread by default, since thread count changes float reductions), files are
overwritten and the monitor's database is rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from attnkit.demo.result import DemoSizes, StepContext, StepResult, Table

__all__ = ["STEPS", "DemoError", "DemoRun", "dashboard_app", "prepare_out", "run_demo"]

Step = Callable[[StepContext], StepResult]


def _steps() -> dict[str, tuple[str, Step]]:
    from attnkit.demo.explaining import explain_step
    from attnkit.demo.llm import llm_step, monitor_step
    from attnkit.demo.tour import tour_step
    from attnkit.demo.training import series_step, text_step, vision_step

    return {
        "tour": ("mechanisms vs their references", tour_step),
        "text": ("text: soft, hard, self-attention vs mean pooling", text_step),
        "vision": ("images: ViT vs mean mixing, hard patches, CNN", vision_step),
        "series": ("series: lag attention vs no attention, naive, AR", series_step),
        "explain": ("MiniLM: explanations and verdicts", explain_step),
        "llm": ("LLM testbed: signals, hallucination detector, eval", llm_step),
        "monitor": ("monitor: SQLite log and drift report", monitor_step),
    }


STEPS = ("tour", "text", "vision", "series", "explain", "llm", "monitor")
"""The steps in the order they run (``monitor`` reuses ``llm``'s model and detector)."""


class DemoError(Exception):
    """A problem the user can fix (an unwritable output folder, an unknown step); ``option``
    names the command-line option at fault."""

    def __init__(self, message: str, option: str = "--out") -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class DemoRun:
    """A finished demo: its steps' results (with ``steps=``, also the earlier run's results of
    the other steps, read from ``summary.json``), the index page and the wall time."""

    out: Path
    results: tuple[StepResult, ...]
    index: Path
    seconds: float
    ran: tuple[str, ...] = ()  # the steps this run ran (the others are an earlier run's)

    @property
    def failed(self) -> list[str]:
        """The steps of this run that failed."""
        return [r.name for r in self.results if r.name in self.ran and r.status == "failed"]

    @property
    def ok(self) -> bool:
        """No step of this run failed (skipped is fine: an optional extra is not installed)."""
        return not self.failed

    @property
    def database(self) -> Path:
        """The monitor's SQLite file."""
        return self.out / "monitor" / "monitor.db"


def prepare_out(out: Path) -> Path:
    """Create ``out`` and check that files can be written there; raises :class:`DemoError`."""
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".attnkit-write-test-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise DemoError(f"cannot write the demo's files to {out}: {reason}") from error
    return out.resolve()


def _about(threads: int) -> dict[str, str]:
    import platform

    import torch

    import attnkit

    return {
        "attnkit": attnkit.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": str(threads),
    }


def _commands(out: Path) -> list[tuple[str, str]]:
    db = out / "monitor" / "monitor.db"
    llm = out / "llm"
    return [
        ("the monitor's dashboard on this run's database", f"attnkit serve --db sqlite:///{db}"),
        (
            "the evaluation suite on the testbed model",
            f"attnkit eval {llm / 'prompts.jsonl'} --model {llm / 'model'} "
            f"--detector {llm / 'detector.json'} --out {llm / 'eval'}",
        ),
        ("explain your own sentence", 'attnkit explain minilm "a wonderful day" --out report.html'),
        ("train one of the demo's tasks longer", "attnkit train text --attention soft"),
    ]


def _summary(result: StepResult) -> dict:
    payload = dataclasses.asdict(dataclasses.replace(result, data=None))
    payload.pop("data")
    return payload


def run_demo(
    out: Path | str = "attnkit-demo",
    sizes: DemoSizes | None = None,
    *,
    steps: Sequence[str] | None = None,
    seed: int = 0,
    threads: int = 1,
    console=None,
    progress: bool = True,
    on_step: Callable[[StepResult], None] | None = None,
) -> DemoRun:
    """Run the demo into ``out``; see the module docstring.

    Args:
        out: output folder (created).
        sizes: :meth:`DemoSizes.full` by default; :meth:`DemoSizes.quick` for a smoke run.
        steps: names from :data:`STEPS` to run (in :data:`STEPS` order); default all. The
            index page keeps the other steps of an earlier run in ``out``, if any.
        seed: seeds every model and data draw.
        threads: torch CPU threads while the demo runs (restored afterwards).
        console: a ``rich.console.Console`` for the bars (default: a new one on stderr).
        progress: show progress bars.
        on_step: called with each step's result as soon as it is done.
    """
    import torch
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    known = _steps()
    chosen = list(STEPS) if steps is None else list(steps)
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise DemoError(f"unknown step(s) {unknown}; the steps are {list(STEPS)}", "--only")
    chosen = [name for name in STEPS if name in chosen]
    if threads < 1:
        raise DemoError(f"threads must be >= 1, got {threads}", "--threads")
    out = prepare_out(Path(out))
    sizes = DemoSizes.full() if sizes is None else sizes
    console = Console(stderr=True) if console is None else console
    results: dict[str, StepResult] = {}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    bars = Progress(
        TextColumn("{task.description:<56}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
    )
    try:
        with bars:
            overall = bars.add_task("attnkit demo", total=len(chosen))
            for name in chosen:
                label, step = known[name]
                bar = bars.add_task(f"  {name}: {label}", total=None)

                def report(done: int, total: int, bar=bar) -> None:
                    bars.update(bar, completed=done, total=total)

                context = StepContext(out, sizes, report, results, seed)
                result = _run_step(name, label, step, context, console)
                results[name] = result
                bars.update(bar, visible=False)
                bars.advance(overall)
                if on_step is not None:
                    on_step(result)
    finally:
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - started
    kept = _earlier_results(out, skip=set(results)) if steps is not None else {}
    ordered = tuple(
        results[name] if name in results else kept[name]
        for name in STEPS
        if name in results or name in kept
    )
    (out / "summary.json").write_text(
        json.dumps({"steps": [_summary(r) for r in ordered]}, indent=1, default=str) + "\n"
    )
    from attnkit.demo.page import render_index

    index = out / "index.html"
    index.write_text(
        render_index(ordered, out, about=_about(threads), commands=_commands(out), seconds=seconds),
        encoding="utf-8",
    )
    return DemoRun(out, ordered, index, seconds, tuple(results))


def _earlier_results(out: Path, skip: set[str]) -> dict[str, StepResult]:
    """The results of an earlier run's steps in ``out/summary.json`` (those not in ``skip``),
    so that ``--only`` updates some steps of the index page and keeps the others."""
    path = out / "summary.json"
    try:
        steps = json.loads(path.read_text())["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    kept = {}
    for step in steps:
        try:
            if step["name"] in skip or step["name"] not in STEPS:
                continue
            table = step.get("table")
            if table is not None:
                table = Table(
                    tuple(table["columns"]),
                    tuple(tuple(row) for row in table["rows"]),
                    tuple(table.get("timing", ())),
                )
            fields = {f.name for f in dataclasses.fields(StepResult)} - {"data", "table"}
            values = {key: step[key] for key in fields if key in step}
            values["notes"] = tuple(values.get("notes", ()))
            values["files"] = tuple(values.get("files", ()))
            kept[step["name"]] = StepResult(**values, table=table)
        except (KeyError, TypeError, ValueError):
            continue  # a summary from another version: that step is left out
    return kept


def _run_step(name: str, label: str, step: Step, context: StepContext, console) -> StepResult:
    import torch

    torch.manual_seed(context.seed)
    started = time.perf_counter()
    try:
        result = step(context)
    except Exception as error:  # the other steps still run; the page and exit code say so
        top = getattr(error, "name", None) or ""
        if isinstance(error, ModuleNotFoundError) and top.partition(".")[0] not in ("", "attnkit"):
            note = f"needs an optional dependency: {error} (pip install 'attnkit[all]')"
            result = StepResult(name, label, status="skipped", notes=(note,))
        else:  # attnkit's own import errors included
            console.print_exception(max_frames=8)
            note = f"{type(error).__name__}: {error}"
            result = StepResult(name, label, status="failed", notes=(note,))
    return dataclasses.replace(result, seconds=time.perf_counter() - started)


def dashboard_app(out: Path | str):
    """The monitoring service (REST API and dashboard) on a demo run's database in ``out``."""
    from attnkit.monitor.server import create_app
    from attnkit.monitor.settings import Settings

    database = Path(out) / "monitor" / "monitor.db"
    if not database.is_file():
        raise DemoError(
            f"{database} does not exist: run the demo (with its monitor step) first", "--serve"
        )
    return create_app(Settings(db=f"sqlite:///{database.resolve()}"))
