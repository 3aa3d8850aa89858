"""Request bodies of the monitoring API (pydantic): what a record may hold, checked strictly.

Numbers must be JSON numbers (no strings, no NaN or infinity) inside the range the signal can
take (:data:`~attnkit.llm.signals.RANGES`, the signals' vocabulary; counts >= 0),
strings must be valid Unicode without NUL characters (PostgreSQL refuses them), and every list and
string has a bound, so a request is accepted whole or refused with a 422 naming the field. The
bounds also bound the cost of checking a body: a per-token trace holds at most
:data:`MAX_LEANED_ON` context positions per answer token.

The signal fields are built from the vocabulary (:data:`~attnkit.llm.signals.VOCABULARY`): a record
holds the mean of every per-request signal (required, except those no trace holds, such as
``detector_score``, which may be null), a per-token trace one list per per-token signal.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

from attnkit.llm.signals import RANGES, RECORD_SIGNALS, TOKEN_SIGNALS, VOCABULARY

__all__ = ["MAX_LEANED_ON", "MAX_TOKENS", "BatchIn", "RecordIn", "TokenTraceIn",
           "storable_text"]  # fmt: skip

MAX_TOKENS = 8192  # answer and context tokens in one per-token trace
MAX_LEANED_ON = 32  # context positions one answer token may name in ``leaned_on``


def storable_text(value: str) -> str | None:
    """Why ``value`` cannot be stored (NUL, lone surrogate), or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def _text(value: str) -> str:
    problem = storable_text(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def Text(max_length: int, min_length: int = 0):
    return Annotated[
        str, Field(min_length=min_length, max_length=max_length), AfterValidator(_text)
    ]


Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]


def Ranged(name: str):
    low, high = RANGES[name]
    return Annotated[float, Field(ge=low, le=high, allow_inf_nan=False)]


Pair = Annotated[list[Finite], Field(min_length=2, max_length=2)]
STRICT = ConfigDict(extra="forbid", strict=True)


class ContextIn(BaseModel):
    """The context of a per-token trace."""

    model_config = STRICT
    start: Count  # position of the context's first token in the prompt
    tokens: list[Text(1000)] = Field(max_length=MAX_TOKENS)
    truncated: bool = False


class _TokenTraceChecks(BaseModel):
    model_config = STRICT

    @model_validator(mode="after")
    def _same_lengths(self):
        n = len(self.tokens)
        for name in (*TOKEN_SIGNALS, "leaned_on"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have one entry per token ({n})")
        context = len(self.context.tokens)
        for row in self.leaned_on:
            for position, share in row:
                if not (position.is_integer() and 0 <= position < context):
                    raise ValueError(
                        f"leaned_on positions must be integers in [0, {context}), got {position}"
                    )
                if not 0 <= share <= 1:
                    raise ValueError(f"leaned_on shares must be in [0, 1], got {share}")
        return self


TokenTraceIn = create_model(
    "TokenTraceIn",
    __base__=_TokenTraceChecks,
    __module__=__name__,
    __doc__="Compact per-token trace (:func:`attnkit.monitor.client.token_trace`).",
    tokens=(list[Text(1000)], Field(max_length=MAX_TOKENS)),
    # per answer token, the mean over layers and heads of every per-token signal
    **{name: (list[Ranged(name)], Field(max_length=MAX_TOKENS)) for name in TOKEN_SIGNALS},
    context=(ContextIn, ...),
    # per answer token: [position in the context, share of heads] it was copied from
    leaned_on=(
        list[Annotated[list[Pair], Field(max_length=MAX_LEANED_ON)]],
        Field(max_length=MAX_TOKENS),
    ),
)


def _record_signal(name: str):
    if VOCABULARY[name].field is None:  # not a trace's: given when there is one
        return (Ranged(name) | None, None)
    return (Ranged(name), ...)


class _Strict(BaseModel):
    model_config = STRICT


RecordIn = create_model(
    "RecordIn",
    __base__=_Strict,
    __module__=__name__,
    __doc__="One generation's record: tags and per-request signal summaries.",
    request_id=(Text(128, min_length=1), ...),  # unique; sending it again changes nothing
    time=(Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)] | None, None),  # epoch s
    model=(Text(200), ""),
    version=(Text(200), ""),
    tags=(dict[Text(64, min_length=1), Text(500)], Field(default_factory=dict, max_length=32)),
    **{name: _record_signal(name) for name in RECORD_SIGNALS},
    prompt_tokens=(Count, ...),
    new_tokens=(Count, ...),
    trace=(TokenTraceIn | None, None),
)


class BatchIn(BaseModel):
    """Several records, written in one transaction."""

    model_config = STRICT
    records: list[RecordIn] = Field(min_length=1, max_length=10_000)
