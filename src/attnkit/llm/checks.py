"""Evaluation checks over generations: a value per example, PASS / WARN / FAIL for it and for the
dataset (in the spirit of Deepchecks' checks and conditions and Evidently's tests).

A check measures one value per example from its :class:`~attnkit.llm.generation.GenerationTrace`
(a mean attention signal, a detector score, the answer's length, whether it refuses, whether it
holds the expected answer). Its :class:`Condition` turns the value into a status; its
:class:`ShareCondition` turns the shares of failing and non-passing examples into the dataset's
status. A value equal to a bound is on the passing side of it.

Example::

    checks = [SignalCheck("lookback_ratio", Condition(fail_below=0.2, warn_below=0.4)),
              AnswerLength(Condition(fail_below=1)), Refusal()]
    Suite(checks).run(load_prompts("prompts.jsonl"), model, tokenizer)
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from attnkit.llm.generation import GenerationTrace
from attnkit.llm.signals import TRACE_SIGNALS, VOCABULARY, signal_mean

__all__ = [
    "AnswerDetector",
    "AnswerLength",
    "Check",
    "CheckResult",
    "Condition",
    "DetectorScore",
    "ExpectedAnswer",
    "Outcome",
    "Refusal",
    "ShareCondition",
    "SignalCheck",
    "Status",
]


class Status(str, Enum):
    """Outcome of a check; ``SKIP``: the check does not apply to the example."""

    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


_ORDER = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3}


def worst(statuses: Sequence[Status]) -> Status:
    """The most severe status (FAIL > WARN > PASS > SKIP); PASS for none."""
    return max(statuses, key=_ORDER.__getitem__, default=Status.PASS)


@dataclass(frozen=True)
class Condition:
    """Status of one value from bounds: FAIL beyond a ``fail_*`` bound, WARN beyond a ``warn_*``
    bound, PASS otherwise; a value equal to a bound passes it. A value that is missing or NaN
    fails.
    """

    fail_below: float | None = None  # FAIL when value < fail_below
    warn_below: float | None = None  # WARN when value < warn_below
    warn_above: float | None = None  # WARN when value > warn_above
    fail_above: float | None = None  # FAIL when value > fail_above

    def __post_init__(self) -> None:
        bounds = [self.fail_below, self.warn_below, self.warn_above, self.fail_above]
        given = [b for b in bounds if b is not None]
        if any(not isinstance(b, int | float) or math.isnan(b) for b in given):
            raise TypeError(f"condition bounds must be numbers, got {bounds}")
        if not given:
            raise ValueError("a condition needs at least one bound")
        if given != sorted(given):
            raise ValueError(
                "condition bounds must be ordered fail_below <= warn_below <= warn_above <= "
                f"fail_above, got {bounds}"
            )

    def status(self, value: float | None) -> Status:
        if value is None or math.isnan(value):
            return Status.FAIL
        if (self.fail_below is not None and value < self.fail_below) or (
            self.fail_above is not None and value > self.fail_above
        ):
            return Status.FAIL
        if (self.warn_below is not None and value < self.warn_below) or (
            self.warn_above is not None and value > self.warn_above
        ):
            return Status.WARN
        return Status.PASS

    def describe(self) -> str:
        parts = [
            f"{status} {sign} {bound:g}"
            for status, sign, bound in (
                ("FAIL", "<", self.fail_below),
                ("WARN", "<", self.warn_below),
                ("WARN", ">", self.warn_above),
                ("FAIL", ">", self.fail_above),
            )
            if bound is not None
        ]
        return ", ".join(parts)


@dataclass(frozen=True)
class ShareCondition:
    """The dataset's status from its examples': FAIL when the share of examples that FAIL is
    above ``fail``, WARN when the share that do not PASS is above ``warn``. Examples the check
    skips are left out of the shares.
    """

    warn: float = 0.0
    fail: float = 0.0

    def __post_init__(self) -> None:
        for name in ("warn", "fail"):
            share = getattr(self, name)
            if not isinstance(share, int | float) or not 0 <= share <= 1:
                raise ValueError(f"{name} must be a share in [0, 1], got {share!r}")

    def status(self, statuses: Sequence[Status]) -> tuple[Status, float]:
        """``(dataset status, share of examples that FAIL)``."""
        applicable = [s for s in statuses if s is not Status.SKIP]
        if not applicable:
            return Status.SKIP, 0.0
        failing = sum(s is Status.FAIL for s in applicable) / len(applicable)
        not_passing = sum(s is not Status.PASS for s in applicable) / len(applicable)
        if failing > self.fail:
            return Status.FAIL, failing
        return (Status.WARN if not_passing > self.warn else Status.PASS), failing


@dataclass(frozen=True)
class Outcome:
    """One check on one example."""

    value: float | None  # booleans as 0 / 1; None where the check does not apply
    status: Status


@dataclass(frozen=True)
class CheckResult:
    """One check over a dataset: its status, the share of failing examples, each outcome."""

    name: str
    condition: str  # the conditions, in words
    status: Status
    failing: float  # share of (applicable) examples that FAIL
    outcomes: list[Outcome]


class Check(ABC):
    """A value per example and the conditions on it. Subclasses implement :meth:`measure` and
    hold a ``name``, a ``share`` condition and either a value ``condition`` or their own
    :meth:`judge` and :meth:`describe`."""

    name: str
    share: ShareCondition

    @abstractmethod
    def measure(self, trace: GenerationTrace, expected: str | None) -> float | None:
        """The example's value (None: the check does not apply)."""

    def judge(self, value: float | None) -> Status:
        return self.condition.status(value)

    def describe(self) -> str:
        return f"{self.condition.describe()}; dataset: {_share_words(self.share)}"

    def run(self, traces: Sequence[GenerationTrace], expected: Sequence[str | None]) -> CheckResult:
        """Outcomes for every example, in order, and the dataset's status."""
        if len(traces) != len(expected):
            raise ValueError(
                f"expected must hold one entry per trace ({len(traces)}), got {len(expected)}"
            )
        outcomes = []
        for trace, answer in zip(traces, expected, strict=True):
            value = self.measure(trace, answer)
            outcomes.append(Outcome(value, self.judge(value)))
        status, failing = self.share.status([o.status for o in outcomes])
        return CheckResult(self.name, self.describe(), status, failing, outcomes)


def _share_words(share: ShareCondition) -> str:
    return f"FAIL if > {share.fail:.0%} of examples fail, WARN if > {share.warn:.0%} do not pass"


@dataclass(frozen=True)
class SignalCheck(Check):
    """Mean of a generation signal over the answer's tokens, layers and heads
    (:func:`~attnkit.llm.signals.signal_mean`; None, which fails, for an empty answer).

    ``signal`` is one of :data:`~attnkit.llm.signals.TRACE_SIGNALS`: ``lookback_ratio``
    (Chuang et al. 2024: low = the answer looked away from its context), ``entropy`` (nats),
    ``sink`` (weight on the first token) or ``max_weight``; their meanings and ranges are in
    :data:`~attnkit.llm.signals.VOCABULARY`.
    """

    signal: str
    condition: Condition
    share: ShareCondition = field(default_factory=ShareCondition)
    name: str = ""

    def __post_init__(self) -> None:
        if self.signal not in TRACE_SIGNALS:
            raise ValueError(f"signal must be one of {list(TRACE_SIGNALS)}, got {self.signal!r}")
        if not self.name:
            object.__setattr__(self, "name", f"mean {self.signal.replace('_', ' ')}")

    def measure(self, trace: GenerationTrace, expected: str | None) -> float | None:
        return signal_mean(getattr(trace, VOCABULARY[self.signal].field), self.signal)


@dataclass(frozen=True)
class DetectorScore(Check):
    """A fitted :class:`~attnkit.llm.lookback_lens.LookbackLens`: probability that the answer is not
    grounded in its context, over the whole answer or, with ``window``, the largest over its
    sliding windows (Chuang et al. 2024, §3); or a fitted detector that scores a trace alone
    (:func:`~attnkit.llm.detection.check_trace_detector`). Scored by
    :func:`~attnkit.llm.detection.answer_score`, as the monitor scores it.
    """

    detector: object
    condition: Condition = field(default_factory=lambda: Condition(warn_above=0.5, fail_above=0.8))
    window: int | None = None
    share: ShareCondition = field(default_factory=ShareCondition)
    name: str = "detector score"

    def __post_init__(self) -> None:
        if not callable(getattr(self.detector, "predict_proba", None)):
            raise TypeError(
                f"detector must be a fitted LookbackLens, got {type(self.detector).__name__}"
            )
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be positive, got {self.window}")
        from attnkit.llm.detection import Detector

        if isinstance(self.detector, Detector) and self.window is not None:
            raise ValueError(
                "window applies to a LookbackLens; a Detector's window is its own parameter, "
                f"got window={self.window}"
            )

    def measure(self, trace: GenerationTrace, expected: str | None) -> float | None:
        from attnkit.llm.detection import answer_score

        return answer_score(self.detector, trace, self.window) if len(trace.new_ids) else None


@dataclass(frozen=True)
class AnswerDetector(Check):
    """A fitted detector of :mod:`attnkit.llm.detection`, by name (ReDeEP, Lookback Lens,
    LLM-Check, ...): its hallucination score of each answer, from one teacher-forced pass of the
    model over prompt and answer (:func:`attnkit.llm.readout.read_answers`, run by
    :meth:`prepare`, which :meth:`Suite.run <attnkit.llm.suite.Suite.run>` calls). The evidence
    saved with the detector (its measured AUROC with interval and n) is part of the check's
    description, so that the report says how far the score can be trusted.

    The default condition (WARN > 0.5, FAIL > 0.8) fits detectors whose score is a probability
    (the logistic ones); the others need a ``condition``.
    """

    detector: object
    condition: Condition | None = None
    share: ShareCondition = field(default_factory=ShareCondition)
    name: str = ""
    _signals: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        from attnkit.llm.detection import Detector

        if not isinstance(self.detector, Detector) or self.detector.state is None:
            raise TypeError(
                "detector must be a fitted attnkit.llm.detection.Detector, got "
                f"{self.detector!r:.80}"
            )
        if self.condition is None:
            if not self.detector.supervised:
                raise ValueError(
                    f"condition must be given for the {self.detector.name!r} detector, whose "
                    "score is not a probability"
                )
            object.__setattr__(self, "condition", Condition(warn_above=0.5, fail_above=0.8))
        if not self.name:
            object.__setattr__(self, "name", f"{self.detector.name} score")

    def prepare(self, model, traces: Sequence[GenerationTrace]) -> None:
        """Read the signals of every non-empty answer once (one batched pass)."""
        from attnkit.llm.readout import read_answers

        answered = [t for t in traces if len(t.new_ids)]
        self._signals.clear()
        self._signals.update(
            zip(map(id, answered), read_answers(model, answered) if answered else [], strict=True)
        )

    def measure(self, trace: GenerationTrace, expected: str | None) -> float | None:
        if not len(trace.new_ids):
            return None
        signals = self._signals.get(id(trace))
        if signals is None:
            raise ValueError("call prepare(model, traces) with this trace before measure()")
        from attnkit.llm.detection import answer_score

        # a probability for the logistic detectors, as the default condition expects
        return answer_score(self.detector, signals)

    def describe(self) -> str:
        evidence = getattr(self.detector, "evidence", None) or {}
        words = f"; {evidence['summary']}" if "summary" in evidence else ""
        return super().describe() + words


_UNITS = ("words", "tokens", "characters")


@dataclass(frozen=True)
class AnswerLength(Check):
    """Length of the answer in ``words`` (whitespace-separated), ``tokens`` (new tokens, end
    token included) or ``characters``."""

    condition: Condition = field(default_factory=lambda: Condition(fail_below=1))
    unit: str = "words"
    share: ShareCondition = field(default_factory=ShareCondition)
    name: str = "answer length"

    def __post_init__(self) -> None:
        if self.unit not in _UNITS:
            raise ValueError(f"unit must be one of {list(_UNITS)}, got {self.unit!r}")

    def measure(self, trace: GenerationTrace, expected: str | None) -> float | None:
        if self.unit == "tokens":
            return float(len(trace.new_ids))
        text = trace.text.strip()
        return float(len(text.split()) if self.unit == "words" else len(text))

    def describe(self) -> str:
        return f"{self.unit}: {super().describe()}"


REFUSALS = (
    "i cannot",
    "i can't",
    "i can not",
    "i'm sorry",
    "i am sorry",
    "i am unable",
    "i'm unable",
    "as an ai",
    "i won't",
    "i do not know",
    "i don't know",
)


@dataclass(frozen=True)
class Refusal(Check):
    """Whether the answer refuses: it contains one of ``phrases`` (case-insensitive) or matches
    ``pattern`` (a regular expression, searched). A refusing answer gets ``status``."""

    phrases: Sequence[str] = REFUSALS
    pattern: str | None = None
    status: Status = Status.FAIL
    share: ShareCondition = field(default_factory=ShareCondition)
    name: str = "refusal"

    def __post_init__(self) -> None:
        if isinstance(self.phrases, str) or not all(isinstance(p, str) for p in self.phrases):
            raise TypeError(f"phrases must be a list of str, got {self.phrases!r}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ValueError(f"pattern is not a regular expression: {error}") from error
        object.__setattr__(self, "status", Status(self.status))

    def measure(self, trace: GenerationTrace, expected: str | None) -> float | None:
        text = trace.text.lower()
        refused = any(p.lower() in text for p in self.phrases) or (
            self.pattern is not None and re.search(self.pattern, trace.text, re.IGNORECASE)
        )
        return float(bool(refused))

    def judge(self, value: float | None) -> Status:
        return self.status if value else Status.PASS

    def describe(self) -> str:
        return f"{self.status.value} when the answer refuses; dataset: {_share_words(self.share)}"


@dataclass(frozen=True)
class ExpectedAnswer(Check):
    """Whether the answer contains the example's expected answer (case and surrounding space
    ignored); examples without one are skipped. A missing answer gets ``status``."""

    status: Status = Status.FAIL
    share: ShareCondition = field(default_factory=ShareCondition)
    name: str = "expected answer"

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))

    def measure(self, trace: GenerationTrace, expected: str | None) -> float | None:
        if expected is None:
            return None
        return float(expected.strip().lower() in trace.text.lower())

    def judge(self, value: float | None) -> Status:
        if value is None:
            return Status.SKIP
        return Status.PASS if value else self.status

    def describe(self) -> str:
        return (
            f"{self.status.value} when the expected answer is missing; "
            f"dataset: {_share_words(self.share)}"
        )
