"""What a demo step returns, how big the steps are, and what a step is handed.

Every step is a function ``step(context: StepContext) -> StepResult``: it writes its own files
under ``context.out / <step name>/`` and returns their paths relative to ``context.out``, with a
table of its numbers, its headline figures and one honest sentence per finding (including where a
baseline wins).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoSizes", "StepContext", "StepResult", "Table"]

Progress = Callable[[int, int], None]  # (done, total) units of work of the current step


@dataclass(frozen=True)
class Table:
    """A small table for the index page: column names and rows of already formatted cells."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    timing: tuple[str, ...] = ()  # columns that hold timings (they change from run to run)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"row {row!r} has {len(row)} cells, expected {len(self.columns)}")
        unknown = set(self.timing) - set(self.columns)
        if unknown:
            raise ValueError(f"timing names unknown columns {sorted(unknown)}")


@dataclass(frozen=True)
class StepResult:
    """One step of the demo: what it found, the files it wrote and how long it took.

    ``figures`` are the headline numbers (``{"soft accuracy": 0.92, ...}``); ``files`` are paths
    relative to the demo's output folder (figures shown on the page are the ``.png`` ones);
    ``notes`` are sentences, each a finding in words, and ``headline`` the step's finding in one
    line. ``status`` is ``"ok"``, ``"skipped"`` (an
    optional extra is missing; ``notes`` says which) or ``"failed"`` (``notes`` holds the error).
    """

    name: str  # short id, also the folder of its files: "text"
    title: str  # a heading: "Text classification: attention pooling vs mean pooling"
    headline: str = ""  # the finding in one line, for the overview (default: the first note)
    figures: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    table: Table | None = None
    files: tuple[str, ...] = ()
    seconds: float = 0.0
    status: str = "ok"
    data: Any = field(default=None, repr=False, compare=False)  # handed to later steps only


@dataclass(frozen=True)
class DemoSizes:
    """How much each step trains and evaluates; :meth:`full` is the demo, :meth:`quick` tests."""

    tour_length: int = 512  # tokens of the mechanisms tour's batch
    text_examples: int = 2000  # evidence-task examples (80/10/10 split)
    text_length: int = 60  # tokens per example
    text_classes: int = 6
    text_steps: int = 120  # optimizer steps per text model
    vision_steps: int = 300  # optimizer steps per image model (sklearn digits)
    series_steps: int = 600  # step budget per forecaster (co2), early stopping on validation
    explain_steps: int = 120  # MiniLM fine-tuning steps (batches of 16)
    explain_texts: int = 16  # held-out sentences explained
    explain_ig_steps: int = 16  # integrated-gradients steps
    testbed_steps: int = 400  # CausalLM training steps (batches of 64)
    testbed_questions: int = 400  # questions answered for the detector (half absent)
    monitor_reference: int = 240  # monitored answers in the reference week
    monitor_current: int = 120  # monitored answers in the current day

    @classmethod
    def full(cls) -> DemoSizes:
        """The sizes ``attnkit demo`` runs (about 2-3 minutes on 2 CPU cores)."""
        return cls()

    @classmethod
    def quick(cls) -> DemoSizes:
        """Tiny sizes for tests: every step runs, nothing is learned well (seconds)."""
        return cls(
            tour_length=16,
            text_examples=200,
            text_length=20,
            text_classes=4,
            text_steps=6,
            vision_steps=6,
            series_steps=12,
            explain_steps=2,
            explain_texts=4,
            explain_ig_steps=4,
            testbed_steps=6,
            testbed_questions=24,
            monitor_reference=16,
            monitor_current=8,
        )


@dataclass
class StepContext:
    """What a step is handed: where to write, how big to be, whom to tell about progress."""

    out: Path  # the demo's output folder
    sizes: DemoSizes
    progress: Progress = lambda done, total: None
    results: Mapping[str, StepResult] = field(default_factory=dict)  # earlier steps, by name
    seed: int = 0

    def folder(self, name: str) -> Path:
        """``out / name``, created."""
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, name: str, filename: str, payload: Any) -> str:
        """Write ``payload`` to ``out / name / filename``; returns the relative path."""
        path = self.folder(name) / filename
        path.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")
        return f"{name}/{filename}"
