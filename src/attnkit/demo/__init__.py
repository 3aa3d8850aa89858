"""``attnkit demo``: the whole library on bundled real data and models, in a few minutes.

The steps (:data:`~attnkit.demo.runner.STEPS`), each a function of a :class:`StepContext` that
returns a :class:`StepResult` and writes its files under ``out/<step>/``:

1. ``tour``: every mechanism once, checked against its reference (:func:`mechanisms_tour`);
2. ``text``, ``vision``, ``series``: attention models and their no-attention baselines trained
   with one Trainer (:mod:`attnkit.demo.training`);
3. ``explain``: a pretrained MiniLM's predictions explained, with faithfulness verdicts
   (:mod:`attnkit.demo.explaining`);
4. ``llm`` and ``monitor``: LLM signals and the hallucination detector on the retrieval testbed,
   logged to an SQLite monitor with its drift report (:mod:`attnkit.demo.llm`).

:func:`run_demo` runs them with progress bars and writes ``out/index.html``, one self-contained
page that links every result. Heavy modules are imported when a step runs.
"""

from attnkit.demo.result import DemoSizes, StepContext, StepResult, Table
from attnkit.demo.runner import STEPS, DemoError, DemoRun, dashboard_app, prepare_out, run_demo
from attnkit.demo.tour import TourStep, mechanisms_tour

__all__ = [
    "STEPS",
    "DemoError",
    "DemoRun",
    "DemoSizes",
    "StepContext",
    "StepResult",
    "Table",
    "TourStep",
    "dashboard_app",
    "mechanisms_tour",
    "prepare_out",
    "run_demo",
]
