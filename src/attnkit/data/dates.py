"""Date normalization: human-written dates to ISO 8601, the sequence-to-sequence test task.

``"saturday 9 may 1998"``, ``"May 9, 1998"`` or ``"09/05/98"`` -> ``"1998-05-09"``. Dates are
drawn with a seed from a range of :class:`datetime.date` and written in one of several surface
formats (:data:`FORMATS`), each of which :func:`datetime.datetime.strptime` reads back with the
format's ``pattern``. Inputs and outputs are character sequences; the input lengths are kept so
that accuracy can be reported by length (the test of Bahdanau et al. 2015: attention should
degrade less on long inputs than a fixed-size context).

A :class:`DateSplit` item is a dict ``{"source": (T_in,) int64, "length": () int64, "target":
(T_out,) int64, "format": () int64}``; the target is the 10 ISO characters then ``</s>``.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnkit.data.text import PAD, UNK, Vocabulary, pad_ids

__all__ = [
    "BOS",
    "EOS",
    "FORMATS",
    "DateFormat",
    "DateSplit",
    "DateTask",
    "make_date_task",
    "source_vocabulary",
    "target_vocabulary",
]

BOS = "<s>"  # the decoder's first input
EOS = "</s>"  # ends every target

MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class DateFormat:
    """A way of writing a date.

    Attributes:
        name: a short description, e.g. ``"d month yyyy"``.
        render: the date as text (English names, independent of the locale).
        pattern: the :meth:`datetime.datetime.strptime` pattern that reads the text back.
        example: the rendering of 1998-05-09.
    """

    name: str
    render: Callable[[date], str]
    pattern: str

    @property
    def example(self) -> str:
        return self.render(date(1998, 5, 9))


def _month(d: date) -> str:
    return MONTHS[d.month - 1]


def _weekday(d: date) -> str:
    return WEEKDAYS[d.weekday()]


FORMATS: tuple[DateFormat, ...] = (
    DateFormat("d month yyyy", lambda d: f"{d.day} {_month(d)} {d.year}", "%d %B %Y"),
    DateFormat(
        "Month d, yyyy", lambda d: f"{_month(d).capitalize()} {d.day}, {d.year}", "%B %d, %Y"
    ),
    DateFormat("dd/mm/yy", lambda d: f"{d.day:02d}/{d.month:02d}/{d.year % 100:02d}", "%d/%m/%y"),
    DateFormat(
        "weekday d month yyyy",
        lambda d: f"{_weekday(d)} {d.day} {_month(d)} {d.year}",
        "%A %d %B %Y",
    ),
    DateFormat("yyyy.mm.dd", lambda d: f"{d.year}.{d.month:02d}.{d.day:02d}", "%Y.%m.%d"),
    DateFormat(
        "Wkd, dd Mon yyyy",
        lambda d: (
            f"{_weekday(d)[:3].capitalize()}, {d.day:02d} {_month(d)[:3].capitalize()} {d.year}"
        ),
        "%a, %d %b %Y",
    ),
    DateFormat(
        "Weekday, Month d, yyyy",
        lambda d: f"{_weekday(d).capitalize()}, {_month(d).capitalize()} {d.day}, {d.year}",
        "%A, %B %d, %Y",
    ),
    DateFormat(
        "dd-MON-yy",
        lambda d: f"{d.day:02d}-{_month(d)[:3].upper()}-{d.year % 100:02d}",
        "%d-%b-%y",
    ),
)
"""The surface formats, all read back by ``strptime``. Two-digit years follow ``strptime``'s
rule (69-99 are 19xx, 00-68 are 20xx), so dates must lie in 1969-2068."""


def source_vocabulary() -> Vocabulary:
    """Characters any format can write: letters, digits, space and ``,./-``."""
    return Vocabulary((PAD, UNK, *string.ascii_letters, *string.digits, " ", ",", ".", "/", "-"))


def target_vocabulary() -> Vocabulary:
    """``<s>``, ``</s>``, the digits and ``-``."""
    return Vocabulary((PAD, UNK, BOS, EOS, *string.digits, "-"))


class DateSplit(Dataset):
    """One split of the date task.

    Attributes:
        sources: ``(n, T_in)`` int64 character ids, 0-padded.
        lengths: ``(n,)`` int64 input lengths in characters.
        targets: ``(n, T_out)`` int64: the ISO date's characters, then ``</s>``.
        formats: ``(n,)`` int64 index into the task's formats.
        texts: the inputs as strings.
        dates: the dates.
    """

    def __init__(
        self,
        sources: Tensor,
        lengths: Tensor,
        targets: Tensor,
        formats: Tensor,
        texts: Sequence[str],
        dates: Sequence[date],
    ) -> None:
        self.sources = sources
        self.lengths = lengths
        self.targets = targets
        self.formats = formats
        self.texts = tuple(texts)
        self.dates = tuple(dates)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {
            "source": self.sources[index],
            "length": self.lengths[index],
            "target": self.targets[index],
            "format": self.formats[index],
        }

    def subset(self, indices: Sequence[int] | Tensor) -> DateSplit:
        """The examples at ``indices``."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        picked = indices.tolist()
        return DateSplit(
            self.sources[indices],
            self.lengths[indices],
            self.targets[indices],
            self.formats[indices],
            [self.texts[i] for i in picked],
            [self.dates[i] for i in picked],
        )


@dataclass(frozen=True)
class DateTask:
    """Train / validation / test splits with disjoint dates, and their vocabularies."""

    train: DateSplit
    val: DateSplit
    test: DateSplit
    source_vocab: Vocabulary
    target_vocab: Vocabulary
    formats: tuple[DateFormat, ...]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Target ids as text, up to the first ``</s>`` (``<s>`` and padding dropped)."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        eos = self.target_vocab.tokens.index(EOS)
        if eos in ids:
            ids = ids[: ids.index(eos)]
        return "".join(t for t in self.target_vocab.decode(ids) if t != BOS)


def make_date_task(
    n_train: int = 8000,
    n_val: int = 1000,
    n_test: int = 2000,
    formats: Sequence[DateFormat] = FORMATS,
    start: date = date(1970, 1, 1),
    end: date = date(2049, 12, 31),
    seed: int = 0,
) -> DateTask:
    """Draw distinct dates in ``[start, end]``, write each in a random format, split them.

    Every date appears once in the whole task, so a test date was never seen in training (in
    any format). Inputs are padded to the longest input of the task, so all splits share
    ``T_in``.

    Args:
        n_train, n_val, n_test: examples per split (``n_val``, ``n_test`` may be 0).
        formats: the formats to draw from (default: all of :data:`FORMATS`).
        start, end: the date range, inside 1969-01-01 .. 2068-12-31.
        seed: the same seed gives the same task.
    """
    if n_train < 1 or n_val < 0 or n_test < 0:
        raise ValueError(
            f"need n_train >= 1, n_val >= 0, n_test >= 0; got {n_train}, {n_val}, {n_test}"
        )
    if not formats:
        raise ValueError("formats must name at least one DateFormat")
    if not date(1969, 1, 1) <= start <= end <= date(2068, 12, 31):
        raise ValueError(
            f"need 1969-01-01 <= start <= end <= 2068-12-31 (two-digit years), got {start} "
            f"and {end}"
        )
    days = (end - start).days + 1
    total = n_train + n_val + n_test
    if total > days:
        raise ValueError(f"{total} examples need {total} distinct dates; the range has {days}")
    rng = random.Random(seed)
    dates = [start + timedelta(days=offset) for offset in rng.sample(range(days), total)]
    chosen = [rng.randrange(len(formats)) for _ in range(total)]
    texts = [formats[f].render(d) for f, d in zip(chosen, dates, strict=True)]
    source_vocab, target_vocab = source_vocabulary(), target_vocabulary()
    sources, lengths = pad_ids([source_vocab.encode(list(t)) for t in texts])
    eos = target_vocab.encode([EOS])
    targets, _ = pad_ids([target_vocab.encode(list(d.isoformat())) + eos for d in dates])
    format_ids = torch.tensor(chosen, dtype=torch.long)

    def split(lo: int, hi: int) -> DateSplit:
        return DateSplit(
            sources[lo:hi], lengths[lo:hi], targets[lo:hi], format_ids[lo:hi],
            texts[lo:hi], dates[lo:hi],
        )  # fmt: skip

    return DateTask(
        split(0, n_train),
        split(n_train, n_train + n_val),
        split(n_train + n_val, total),
        source_vocab,
        target_vocab,
        tuple(formats),
    )
