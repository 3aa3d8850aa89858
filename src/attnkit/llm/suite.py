"""Evaluation suites: run checks over a dataset of prompts with a model → a typed result, JSON and
a self-contained HTML report (in the spirit of Deepchecks' suites and Evidently's reports).

A dataset is a JSONL file, one example a line::

    {"id": "q1", "prompt": "context: ... question: ...", "context": "...", "expected": "paris"}

``context`` is a substring of the prompt or ``[start, stop]`` token positions; ``expected`` is
optional. Every example is generated once (in left-padded batches) with its attention signals and
the exact weights of its answer's queries on its context; every check reads those traces.

Example::

    result = Suite([SignalCheck("lookback_ratio", Condition(warn_below=0.4)), Refusal()]).run(
        load_prompts("prompts.jsonl"), model, tokenizer)
    result.to_json("eval.json"); result.to_html("eval.html"); result.failed
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from torch import nn

from attnkit.llm.checks import (
    AnswerDetector,
    AnswerLength,
    Check,
    CheckResult,
    Condition,
    DetectorScore,
    ExpectedAnswer,
    Outcome,
    Refusal,
    SignalCheck,
    Status,
    worst,
)
from attnkit.llm.generation import GenerationTrace, generate
from attnkit.llm.signals import TRACE_SIGNALS, VOCABULARY, signal_mean
from attnkit.llm.tokens import token_texts

__all__ = ["Example", "ExampleRecord", "Suite", "SuiteResult", "default_suite", "load_prompts"]


@dataclass(frozen=True)
class Example:
    """One prompt of a dataset."""

    id: str
    prompt: str
    context: str | tuple[int, int]  # a substring of the prompt, or token positions
    expected: str | None = None  # the expected answer, when known


def load_prompts(path: str | Path) -> list[Example]:
    """Examples from a JSONL file (fields ``id``, ``prompt``, ``context``, optional
    ``expected``); blank lines are skipped. Errors name the file and line."""
    path = Path(path)
    examples, seen = [], {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            message = f"{where}: not valid JSON ({error.msg} at column {error.colno})"
            raise ValueError(message) from error
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        missing = [name for name in ("id", "prompt", "context") if name not in row]
        if missing:
            raise ValueError(f"{where}: missing field {', '.join(map(repr, missing))}")
        example = _example(row, where)
        if example.id in seen:
            raise ValueError(f"{where}: id {example.id!r} already used on line {seen[example.id]}")
        seen[example.id] = number
        examples.append(example)
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def _example(row: dict, where: str) -> Example:
    identifier, prompt, context = row["id"], row["prompt"], row["context"]
    expected = row.get("expected")
    if not isinstance(identifier, str | int) or isinstance(identifier, bool) or identifier == "":
        raise ValueError(
            f"{where}: 'id' must be a non-empty string or an integer, got {identifier!r}"
        )
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"{where}: 'prompt' must be a non-empty string, got {prompt!r:.60}")
    if isinstance(context, str):
        if not context or context not in prompt:
            raise ValueError(f"{where}: 'context' must be a non-empty substring of 'prompt'")
    elif (
        isinstance(context, list)
        and len(context) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in context)
        and 0 <= context[0] < context[1]
    ):
        context = (context[0], context[1])
    else:
        raise ValueError(
            f"{where}: 'context' must be a substring of 'prompt' or [start, stop] token positions "
            f"with 0 <= start < stop, got {context!r:.60}"
        )
    if expected is not None and not isinstance(expected, str):
        raise ValueError(f"{where}: 'expected' must be a string, got {expected!r:.60}")
    return Example(str(identifier), prompt, context, expected)


@dataclass(frozen=True)
class ExampleRecord:
    """What the report shows of one example."""

    id: str
    prompt: str
    expected: str | None
    answer: str
    new_tokens: int
    context: tuple[int, int]  # token positions of the context in the prompt
    context_tokens: list[str]  # each context token's text
    # mean over the answer's tokens, layers and heads of each context token's weight
    leaned_on: list[float]
    # mean of each trace signal over tokens, layers and heads (NaN for an empty answer)
    signals: dict[str, float]


@dataclass(frozen=True)
class SuiteResult:
    """A suite run: each check's result (outcomes aligned with ``examples``) and the examples."""

    name: str
    model: str
    created: str  # ISO 8601, UTC
    settings: dict[str, object]
    checks: list[CheckResult]
    examples: list[ExampleRecord]

    @property
    def status(self) -> Status:
        """The worst dataset status over the checks."""
        return worst([check.status for check in self.checks])

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL

    def example_status(self, index: int) -> Status:
        """The worst status of example ``index`` over the checks."""
        return worst([check.outcomes[index].status for check in self.checks])

    def to_dict(self) -> dict:
        payload = asdict(self)
        payload["status"] = self.status.value
        return json.loads(json.dumps(payload))  # statuses (str enums) as strings, tuples as lists

    def to_json(self, path: str | Path | None = None) -> str:
        """The result as JSON; written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text: str) -> SuiteResult:
        """A result read back from :meth:`to_json`."""
        payload = json.loads(text)
        checks = [
            CheckResult(
                c["name"],
                c["condition"],
                Status(c["status"]),
                c["failing"],
                [Outcome(o["value"], Status(o["status"])) for o in c["outcomes"]],
            )
            for c in payload["checks"]
        ]
        examples = [
            ExampleRecord(**{**e, "context": tuple(e["context"])}) for e in payload["examples"]
        ]
        return cls(
            payload["name"],
            payload["model"],
            payload["created"],
            payload["settings"],
            checks,
            examples,
        )

    def to_html(self, path: str | Path | None = None) -> str:
        """The self-contained HTML report (:mod:`attnkit.llm.eval_report`)."""
        from attnkit.llm.eval_report import render

        html = render(self)
        if path is not None:
            Path(path).write_text(html, encoding="utf-8")
        return html

    def _repr_html_(self) -> str:
        """The notebook view (:func:`attnkit.views.suite_view`)."""
        from attnkit.views import suite_view

        return suite_view(self).html


@dataclass
class Suite:
    """Checks run together over one generation of a dataset."""

    checks: Sequence[Check]
    name: str = "attnkit eval"
    batch_size: int = 8
    settings: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.checks or not all(isinstance(c, Check) for c in self.checks):
            raise TypeError(f"checks must be a non-empty list of Check, got {self.checks!r:.80}")
        names = [c.name for c in self.checks]
        if len(set(names)) != len(names):
            raise ValueError(f"check names must be unique, got {names}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")

    def run(
        self,
        dataset: Sequence[Example] | str | Path,
        model: nn.Module,
        tokenizer,
        max_new_tokens: int = 32,
        progress: Callable[[int, int], None] | None = None,
        **generate_kwargs,
    ) -> SuiteResult:
        """Generate an answer for every example and run every check on them.

        Args:
            dataset: examples, or the path of a JSONL file (:func:`load_prompts`).
            model, tokenizer: a Hugging Face causal LM and its tokenizer (see
                :func:`attnkit.llm.generate`).
            max_new_tokens: passed to ``generate``, as are ``generate_kwargs`` (greedy
                decoding unless they say otherwise).
            progress: called with ``(examples done, total)`` after each batch.
        """
        examples = load_prompts(dataset) if isinstance(dataset, str | Path) else list(dataset)
        if not examples or not all(isinstance(e, Example) for e in examples):
            raise TypeError("dataset must be a non-empty list of Example or a JSONL path")
        generate_kwargs.setdefault("do_sample", False)
        traces: list[GenerationTrace] = []
        for start in range(0, len(examples), self.batch_size):
            batch = examples[start : start + self.batch_size]
            try:
                traces += generate(
                    model,
                    tokenizer,
                    [e.prompt for e in batch],
                    context=[e.context for e in batch],
                    max_new_tokens=max_new_tokens,
                    context_weights=True,
                    **generate_kwargs,
                )
            except ValueError as error:
                ids = ", ".join(repr(e.id) for e in batch)
                raise ValueError(f"examples {ids} (in this order): {error}") from error
            if progress is not None:
                progress(len(traces), len(examples))
        expected = [e.expected for e in examples]
        for check in self.checks:  # checks that need the model (AnswerDetector) read it once
            prepare = getattr(check, "prepare", None)
            if callable(prepare):
                prepare(model, traces)
        results = [check.run(traces, expected) for check in self.checks]
        config = getattr(model, "config", None)
        return SuiteResult(
            name=self.name,
            model=f"{type(model).__name__} {getattr(config, '_name_or_path', '')}".strip(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            settings={
                "max_new_tokens": max_new_tokens,
                "batch_size": self.batch_size,
                **self.settings,
            },
            checks=results,
            examples=[_record(e, t, tokenizer) for e, t in zip(examples, traces, strict=True)],
        )


def _record(example: Example, trace: GenerationTrace, tokenizer) -> ExampleRecord:
    start, stop = trace.context
    leaned = trace.context_weights.mean(0) if len(trace.new_ids) else None
    return ExampleRecord(
        id=example.id,
        prompt=example.prompt,
        expected=example.expected,
        answer=trace.text,
        new_tokens=len(trace.new_ids),
        context=(start, stop),
        context_tokens=token_texts(trace.prompt_ids[start:stop].tolist(), tokenizer),
        leaned_on=[] if leaned is None else [float(x) for x in leaned],
        signals={name: _mean(trace, name) for name in TRACE_SIGNALS},
    )


def _mean(trace: GenerationTrace, name: str) -> float:
    mean = signal_mean(getattr(trace, VOCABULARY[name].field), name)
    return math.nan if mean is None else mean  # an empty answer: no mean (the report shows nan)


def default_suite(detector=None, batch_size: int = 8) -> Suite:
    """The suite ``attnkit eval`` runs: mean lookback ratio (FAIL < 0.2, WARN < 0.4), sink mass
    (WARN > 0.9), answer length (FAIL for an empty answer), refusal (WARN), the expected answer
    (FAIL when missing, where given) and, with a fitted ``detector``, its score (WARN > 0.5,
    FAIL > 0.8). Every check FAILs the dataset when any example fails. The bounds are starting
    points, not calibrated for any model.

    ``detector`` is a fitted :class:`~attnkit.llm.detection.Detector` (checked by
    :class:`~attnkit.llm.checks.AnswerDetector`; its name and measured AUROC go into the
    result's settings) or a :class:`~attnkit.llm.lookback_lens.LookbackLens` (the older span
    detector, :class:`~attnkit.llm.checks.DetectorScore`).
    """
    from attnkit.llm.detection import Detector

    checks: list[Check] = [
        SignalCheck("lookback_ratio", Condition(fail_below=0.2, warn_below=0.4)),
        SignalCheck("sink", Condition(warn_above=0.9)),
        AnswerLength(Condition(fail_below=1)),
        Refusal(status=Status.WARN),
        ExpectedAnswer(),
    ]
    settings: dict[str, object] = {}
    if isinstance(detector, Detector):
        checks.append(AnswerDetector(detector))
        settings["detector"] = detector.name
        evidence = getattr(detector, "evidence", None) or {}
        if "summary" in evidence:
            settings["detector evidence"] = evidence["summary"]
    elif detector is not None:
        checks.append(DetectorScore(detector))
        settings["detector"] = "lookback lens (span)"
    return Suite(checks, batch_size=batch_size, settings=settings)


def load_any_detector(path: str | Path):
    """A detector file: a :class:`~attnkit.llm.detection.Detector` saved by its ``save`` (JSON
    with a ``"detector"`` name), else a :class:`~attnkit.llm.lookback_lens.LookbackLens`."""
    from attnkit.llm.detection import load_detector
    from attnkit.llm.lookback_lens import LookbackLens

    payload = json.loads(Path(path).read_text())
    if isinstance(payload, dict) and "detector" in payload:
        return load_detector(path)
    return LookbackLens.load(path)


def eval_command(
    prompts: Path,
    model_dir: Path,
    detector: Path | None = None,
    out: Path = Path("attnkit-eval"),
    max_new_tokens: int = 32,
    batch_size: int = 8,
) -> SuiteResult:
    """``attnkit eval``: the default suite over a JSONL file with a model directory (sdpa);
    writes ``eval.json`` and ``eval.html`` in ``out``, with a progress bar and a summary."""
    import transformers
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    examples = load_prompts(prompts)
    lens = None if detector is None else load_any_detector(detector)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, attn_implementation="sdpa"
    ).eval()
    suite = default_suite(lens, batch_size=batch_size)
    console = Console()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("generating", total=len(examples))
        result = suite.run(
            examples,
            model,
            tokenizer,
            max_new_tokens=max_new_tokens,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "eval.json")
    result.to_html(out / "eval.html")
    table = Table(title=f"{result.name}: {result.status.value} ({len(examples)} examples)")
    for column in ("check", "status", "failing examples"):
        table.add_column(column)
    for check in result.checks:
        table.add_row(check.name, check.status.value, f"{check.failing:.0%}")
    console.print(table)
    console.print(f"wrote {out / 'eval.json'} and {out / 'eval.html'}")
    return result
