"""The generation signals: their vocabulary, their per-token computation, and their mean.

:data:`VOCABULARY` names every signal attnkit records of a generation, with its closed range, its
meaning and the :class:`~attnkit.llm.generation.GenerationTrace` field it is read from. Checks,
suites, the monitor's client, schemas, tables and server, and the OpenTelemetry export all read
it; adding a signal is one :class:`Signal` entry (plus a migration when the monitor stores it per
request, which a test checks).

- Lookback ratio (Chuang et al. 2024, "Lookback Lens"): for a new token and a head,
  ``LR = A_ctx / (A_ctx + A_new)``, where ``A_ctx`` is the mean weight on the context tokens and
  ``A_new`` the mean weight on the tokens generated so far (none for the first: ``LR = 1``).
- Retrieval hits (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
  Factuality"): a head copies when the token it attends to most lies in the context and equals
  the token being generated; the share of such steps is the head's retrieval score.

:func:`lookback_ratio` and :func:`retrieval_hits` are elementwise over any layout of steps,
layers and heads; :func:`signal_mean` is the one mean of a signal (checks, suites, the monitor's
records and OTel spans report it). This module imports only torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = [
    "MAX_ENTROPY",
    "RANGES",
    "RECORD_SIGNALS",
    "ROUNDING",
    "TOKEN_SIGNALS",
    "TRACE_SIGNALS",
    "VOCABULARY",
    "Signal",
    "lookback_ratio",
    "retrieval_hits",
    "signal_mean",
]

MAX_ENTROPY = 1000.0  # nats; attention over K keys has entropy <= ln K (ln 2^1442 = 1000)
ROUNDING = 1e-6  # a mean at most this far outside its signal's range is float rounding


@dataclass(frozen=True)
class Signal:
    """One generation signal."""

    name: str  # the name everywhere: trace field, record field, column, check, OTel attribute
    low: float  # the closed range every value lies in
    high: float
    description: str  # what it measures, with its paper
    field: str | None  # the GenerationTrace field, (n, L, H) per new token; None: not a trace's
    per_request: bool  # a monitor record keeps its mean per request (records/rollups column)
    label: str = ""  # in words, for pages (default: the name with spaces)

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name.replace("_", " "))

    @property
    def range(self) -> tuple[float, float]:
        return (self.low, self.high)


_ENTRIES = (
    Signal(
        "lookback_ratio", 0.0, 1.0,
        "lookback ratio (Chuang et al. 2024, Lookback Lens): mean weight on the context over "
        "that plus the mean weight on the tokens generated so far; low = the answer looked away "
        "from its context",
        "lookback_ratio", True,
    ),
    Signal(
        "entropy", 0.0, MAX_ENTROPY,
        "entropy of each head's attention row, in nats (<= ln K over K keys)",
        "entropy", True,
    ),
    Signal(
        "sink", 0.0, 1.0,
        "weight on the prompt's first token (the attention sink of Xiao et al. 2024, "
        "StreamingLLM)",
        "sink", True, "sink mass",
    ),
    Signal("max_weight", 0.0, 1.0, "largest weight of each attention row", "max_weight", True),
    Signal(
        "detector_score", 0.0, 1.0,
        "a fitted Lookback Lens detector's probability that the answer is not grounded in its "
        "context (Chuang et al. 2024)",
        None, True,
    ),
    Signal(
        "retrieval", 0.0, 1.0,
        "retrieval hits (Wu et al. 2024, retrieval heads): the head's largest weight lies on a "
        "context token equal to the token generated; its mean is the share of heads that copied",
        "retrieval", False,
    ),
)  # fmt: skip

VOCABULARY: dict[str, Signal] = {signal.name: signal for signal in _ENTRIES}
RANGES: dict[str, tuple[float, float]] = {s.name: s.range for s in _ENTRIES}
# the signals a monitor record holds the mean of, in the records table's column order
RECORD_SIGNALS: tuple[str, ...] = tuple(s.name for s in _ENTRIES if s.per_request)
# per-token signals of a trace: the per-token series of the dashboard and OTel spans
TOKEN_SIGNALS: tuple[str, ...] = tuple(s.name for s in _ENTRIES if s.field is not None)
# trace fields whose mean a record, a check and a suite's example report
TRACE_SIGNALS: tuple[str, ...] = tuple(
    s.name for s in _ENTRIES if s.field is not None and s.per_request
)


def signal_mean(values: Tensor, name: str) -> float | None:
    """Mean of signal ``name``'s values (any shape, e.g. ``(n, L, H)``), or None when there are
    none (an answer without new tokens has no signals; each caller says what it records then).

    Float rounding can put a mean just outside the signal's range (an entropy of -1e-9 from
    near one-hot weights): a mean at most :data:`ROUNDING` past a bound is that bound.
    """
    if name not in VOCABULARY:
        raise ValueError(f"name must be one of {list(VOCABULARY)}, got {name!r}")
    if not values.numel():
        return None
    mean = float(values.float().mean())
    low, high = RANGES[name]
    if low - ROUNDING <= mean < low:
        return low
    if high < mean <= high + ROUNDING:
        return high
    return mean


def lookback_ratio(
    context_mass: Tensor, prompt_mass: Tensor, context_length: int, new_counts: Tensor
) -> Tensor:
    """Lookback ratio from span masses.

    Args:
        context_mass: total weight on the context span, per query (any shape).
        prompt_mass: total weight on the whole prompt (context included), same shape; the rest
            of each causal row, ``1 - prompt_mass``, lies on the generated tokens.
        context_length: number of context tokens (> 0).
        new_counts: generated tokens each query can see (0 for the first), broadcastable.

    Returns:
        The lookback ratio in ``[0, 1]``, shaped like ``context_mass``.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be positive, got {context_length}")
    on_context = context_mass / context_length
    on_new = (1.0 - prompt_mass).clamp_min(0.0) / new_counts.clamp_min(1)
    on_new = on_new * (new_counts > 0)
    total = on_context + on_new
    return (on_context / total.clamp_min(1e-30)).where(total > 0, 0.0)


def retrieval_hits(
    argmax: Tensor, sequence: Tensor, generated: Tensor, context: tuple[int, int]
) -> Tensor:
    """Whether each head copied the generated token from the context at each step.

    Args:
        argmax: key position of each query's largest weight (any shape).
        sequence: ``(K,)`` token ids of the whole sequence (prompt and generated).
        generated: the token produced at each query's step, broadcastable to ``argmax``.
        context: ``(start, stop)`` token positions of the context.

    Returns:
        Boolean, shaped like ``argmax``.
    """
    start, stop = context
    in_context = (argmax >= start) & (argmax < stop)
    return in_context & (sequence[argmax] == generated)
