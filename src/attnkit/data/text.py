"""Text classification data: word vocabularies, padded datasets, and the user's own files.

- :func:`load_text_file` reads a CSV, TSV or JSONL file of texts and labels, splits it into
  train / validation / test (by the file's own ``split``/``exp_split`` column when it has one,
  else a seeded shuffle; :func:`read_text_splits`), builds a word :class:`Vocabulary` from the
  training split only and encodes every split as a :class:`TextDataset`.
- :func:`evidence_dataset` turns the generated evidence task (:mod:`attnkit.data.evidence`) into
  the same :class:`TextDataset`, so one classifier trains on both.

A :class:`TextDataset` item is a dict ``{"tokens": (T,) int64, "mask": (T,) bool, "label": ()
int64}`` (plus ``"evidence": (T,) bool`` when known); PyTorch's default collate stacks them into
``(B, T)`` batches. Id 0 is padding, id 1 the unknown word.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnkit.data.evidence import EvidenceTask

__all__ = [
    "PAD",
    "SPLIT_COLUMNS",
    "SPLIT_NAMES",
    "UNK",
    "VOCABULARY_FILE",
    "TextData",
    "TextDataset",
    "TextSplits",
    "Vocabulary",
    "evidence_dataset",
    "load_text_file",
    "pad_ids",
    "read_text_splits",
    "save_vocabulary",
    "tokenize",
]

PAD = "<pad>"  # id 0
UNK = "<unk>"  # id 1
EXTENSIONS = (".csv", ".tsv", ".jsonl")
VOCABULARY_FILE = "vocabulary.json"  # {"tokens": [...], "classes": [...], "lowercase": bool}
_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words and punctuation marks of ``text``: ``"Don't stop!"`` -> ``don ' t stop !``."""
    return _WORD.findall(text.lower() if lowercase else text)


@dataclass(frozen=True)
class Vocabulary:
    """Tokens by id; ``tokens[0]`` is padding and ``tokens[1]`` the unknown token."""

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[:2] != (PAD, UNK):
            raise ValueError(f"tokens must start with ({PAD!r}, {UNK!r}), got {self.tokens[:2]}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("tokens must be distinct")
        object.__setattr__(self, "_ids", {token: i for i, token in enumerate(self.tokens)})

    @classmethod
    def build(cls, texts: Iterable[Sequence[str]], min_count: int = 1) -> Vocabulary:
        """Every token seen at least ``min_count`` times, most frequent first (ties by name)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(token for text in texts for token in text)
        kept = sorted(
            (t for t, c in counts.items() if c >= min_count and t not in (PAD, UNK)),
            key=lambda t: (-counts[t], t),
        )
        return cls((PAD, UNK, *kept))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens``; unknown ones map to 1."""
        ids = self._ids  # type: ignore[attr-defined]
        return [ids.get(token, 1) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids``, padding dropped."""
        return [self.tokens[i] for i in ids if i != 0]


def pad_ids(sequences: Sequence[Sequence[int]], length: int | None = None) -> tuple[Tensor, Tensor]:
    """Right-pad id lists with 0 to ``length`` (default: the longest), truncating longer ones.

    Returns:
        ``(ids (n, T) int64, lengths (n,) int64)``.
    """
    length = max((len(s) for s in sequences), default=0) if length is None else length
    ids = torch.zeros(len(sequences), length, dtype=torch.long)
    lengths = torch.zeros(len(sequences), dtype=torch.long)
    for i, seq in enumerate(sequences):
        seq = list(seq)[:length]
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        lengths[i] = len(seq)
    return ids, lengths


class TextDataset(Dataset):
    """Encoded, padded texts with integer labels.

    Args:
        tokens: ``(n, T)`` int64 ids, 0 = padding, every row with at least one real token.
        labels: ``(n,)`` int64 class ids.
        vocabulary: the ids' :class:`Vocabulary`.
        classes: class names by id.
        evidence: optional ``(n, T)`` boolean, ``True`` on tokens known to decide the label.
    """

    def __init__(
        self,
        tokens: Tensor,
        labels: Tensor,
        vocabulary: Vocabulary,
        classes: Sequence[str],
        evidence: Tensor | None = None,
    ) -> None:
        if tokens.ndim != 2 or labels.shape != tokens.shape[:1]:
            raise ValueError(
                f"tokens must be (n, T) and labels (n,), got {tuple(tokens.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if evidence is not None and evidence.shape != tokens.shape:
            raise ValueError(
                f"evidence must be shaped like tokens {tuple(tokens.shape)}, "
                f"got {tuple(evidence.shape)}"
            )
        self.tokens = tokens
        self.labels = labels
        self.vocabulary = vocabulary
        self.classes = tuple(classes)
        self.evidence = evidence

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = {
            "tokens": self.tokens[index],
            "mask": self.tokens[index] != 0,
            "label": self.labels[index],
        }
        if self.evidence is not None:
            item["evidence"] = self.evidence[index]
        return item

    def subset(self, indices: Sequence[int] | Tensor) -> TextDataset:
        """The examples at ``indices``, same vocabulary and classes."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        evidence = None if self.evidence is None else self.evidence[indices]
        return TextDataset(
            self.tokens[indices], self.labels[indices], self.vocabulary, self.classes, evidence
        )

    def text(self, index: int) -> str:
        """Example ``index`` as words."""
        return " ".join(self.vocabulary.decode(self.tokens[index].tolist()))


@dataclass(frozen=True)
class TextData:
    """A user's text file, split and encoded; the vocabulary comes from ``train`` only."""

    train: TextDataset
    val: TextDataset
    test: TextDataset
    vocabulary: Vocabulary
    classes: tuple[str, ...]


def _read_rows(path: Path) -> tuple[list[dict[str, object]], list[str]]:
    """Rows of a CSV/TSV/JSONL file as dicts, and the column names found."""
    if path.suffix == ".jsonl":
        rows: list[dict[str, object]] = []
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: line {number} is not valid JSON ({error})") from None
                if not isinstance(row, dict):
                    raise ValueError(
                        f"{path}: line {number} must be a JSON object, got {type(row).__name__}"
                    )
                rows.append(row)
        columns = sorted({key for row in rows for key in row})
        return rows, columns
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        rows = list(reader)
        return rows, list(reader.fieldnames or [])


SPLIT_COLUMNS = ("split", "exp_split")
"""Columns read as a row's split when the file has one (the first found), e.g. Jain & Wallace's
``exp_split``."""
SPLIT_NAMES = {"train": "train", "dev": "val", "validation": "val", "val": "val", "test": "test"}
"""Values of a split column (case and surrounding spaces ignored) and the split each means."""


@dataclass(frozen=True)
class TextSplits:
    """A user's file split into raw texts and labels, before any vocabulary (``"train"``,
    ``"val"``, ``"test"``; a split can be empty)."""

    texts: dict[str, list[str]]
    labels: dict[str, list[str]]
    classes: tuple[str, ...]
    how: str  # how the rows were split, in words


def read_text_splits(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    split_column: str | None = None,
    lowercase: bool = True,
) -> TextSplits:
    """Read a labelled text file and split its rows (see :func:`load_text_file`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    if path.suffix not in EXTENSIONS:
        raise ValueError(f"path must end in one of {list(EXTENSIONS)}, got {path.name!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    rows, columns = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: the file has no data rows")
    missing = [c for c in (text_column, label_column) if c not in columns]
    if missing:
        raise ValueError(
            f"{path}: column(s) {missing} not found; the file has columns {columns} "
            "(name yours with -o text_column=NAME -o label_column=NAME on the command line, "
            "text_column= and label_column= in Python)"
        )
    if split_column is not None and split_column not in columns:
        raise ValueError(
            f"{path}: split column {split_column!r} not found; the file has columns {columns} "
            "(-o split_column=NAME on the command line)"
        )
    chosen = split_column or next((c for c in SPLIT_COLUMNS if c in columns), None)
    texts, labels, parts = [], [], []
    for number, row in enumerate(rows, start=1):
        text, label = row.get(text_column), row.get(label_column)
        if text is None or not tokenize(str(text), lowercase):
            raise ValueError(f"{path}: row {number} has an empty {text_column!r} ({text!r})")
        if label is None or str(label).strip() == "":
            raise ValueError(f"{path}: row {number} has an empty {label_column!r}")
        texts.append(str(text))
        labels.append(str(label).strip())
        if chosen is not None:
            value = str(row.get(chosen, "")).strip().lower()
            if value not in SPLIT_NAMES:
                raise ValueError(
                    f"{path}: row {number} has {chosen!r} = {row.get(chosen)!r}; expected one of "
                    f"{sorted(SPLIT_NAMES)}"
                )
            parts.append(SPLIT_NAMES[value])
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise ValueError(
            f"{path}: column {label_column!r} has a single class {classes[0]!r}; "
            "a classifier needs at least two"
        )
    if chosen is not None:
        split = {
            name: [i for i, p in enumerate(parts) if p == name] for name in SPLIT_NAMES.values()
        }
        how = f"by the file's {chosen!r} column"
        if not split["train"]:
            raise ValueError(f"{path}: no row has {chosen!r} = 'train'")
        if not split["val"] and val_fraction > 0:  # carve validation rows out of train
            order = list(split["train"])
            random.Random(seed).shuffle(order)
            n_val = max(1, round(val_fraction * len(order)))
            if n_val >= len(order):
                raise ValueError(f"{path}: too few 'train' rows to hold out {n_val} for validation")
            split["val"], split["train"] = sorted(order[:n_val]), sorted(order[n_val:])
            how += f"; validation: {val_fraction:.0%} of its train rows, shuffled with seed {seed}"
    else:
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        n_val = max(1, round(val_fraction * len(rows))) if val_fraction > 0 else 0
        n_test = max(1, round(test_fraction * len(rows))) if test_fraction > 0 else 0
        if len(rows) - n_val - n_test < 1:
            raise ValueError(
                f"{path}: {len(rows)} rows leave none for training after {n_val} validation and "
                f"{n_test} test rows"
            )
        split = {
            "val": order[:n_val],
            "test": order[n_val : n_val + n_test],
            "train": order[n_val + n_test :],
        }
        how = f"shuffled with seed {seed}: {val_fraction:.0%} validation, {test_fraction:.0%} test"
    return TextSplits(
        {name: [texts[i] for i in idx] for name, idx in split.items()},
        {name: [labels[i] for i in idx] for name, idx in split.items()},
        classes,
        how,
    )


def load_text_file(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    min_count: int = 1,
    max_length: int = 256,
    lowercase: bool = True,
    split_column: str | None = None,
) -> TextData:
    """Read a labelled text file, split it, build the vocabulary, encode every split.

    Args:
        path: a ``.csv``, ``.tsv`` (header row first) or ``.jsonl`` (one object per line) file.
        text_column, label_column: the columns holding the text and the label (any values;
            classes are their string forms, sorted).
        val_fraction, test_fraction: shares of the rows held out (at least one row each when
            > 0), after a shuffle with ``seed``. ``0`` leaves that split empty.
        seed: seeds the shuffle.
        min_count: words seen fewer times in the training split map to ``<unk>``.
        max_length: texts are cut to this many tokens; batches are padded to the longest
            remaining text.
        lowercase: lowercase texts before splitting into words (:func:`tokenize`).
        split_column: a column naming each row's split (values in :data:`SPLIT_NAMES`:
            ``train``, ``dev``/``validation``/``val``, ``test``). By default the first of
            :data:`SPLIT_COLUMNS` the file has; when there is one, the file's split is kept and
            the fractions are not used, except that a file without validation rows gets
            ``val_fraction`` of its train rows as validation.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unknown extension, a missing column (the message lists those found), no
            rows, an empty text or label, a label column with a single class, or a split value
            not in :data:`SPLIT_NAMES`.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    splits = read_text_splits(
        path, text_column, label_column, val_fraction, test_fraction, seed, split_column, lowercase
    )
    words = {
        name: [tokenize(text, lowercase)[:max_length] for text in texts]
        for name, texts in splits.texts.items()
    }
    vocabulary = Vocabulary.build(words["train"], min_count)
    class_ids = {c: i for i, c in enumerate(splits.classes)}

    def encode(name: str) -> TextDataset:
        ids, _ = pad_ids([vocabulary.encode(w) for w in words[name]])  # (n, T); n may be 0
        targets = torch.tensor(
            [class_ids[label] for label in splits.labels[name]], dtype=torch.long
        )
        return TextDataset(ids, targets, vocabulary, splits.classes)

    return TextData(encode("train"), encode("val"), encode("test"), vocabulary, splits.classes)


def evidence_dataset(task: EvidenceTask) -> TextDataset:
    """The evidence task (:func:`attnkit.data.evidence.make_evidence_task`) as a
    :class:`TextDataset`: ids shift by 2 to make room for padding and ``<unk>``, positions and
    the evidence mask stay as they are."""
    vocabulary = Vocabulary((PAD, UNK, *task.vocabulary))
    names = {word.split("_")[0] for word in task.vocabulary if word.startswith("class")}
    classes = tuple(str(c) for c in range(len(names)))
    return TextDataset(task.tokens + 2, task.labels, vocabulary, classes, task.evidence)


def save_vocabulary(
    directory: str | Path, tokens: Sequence[str], classes: Sequence[str], lowercase: bool = True
) -> Path:
    """Write ``vocabulary.json`` into a run or checkpoint directory, for
    :func:`attnkit.interpret.load_explainable`.

    Args:
        tokens: the training vocabulary by id (``dataset.vocabulary.tokens``).
        classes: class names by id (``dataset.classes``).
    """
    path = Path(directory) / VOCABULARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"tokens": list(tokens), "classes": [str(c) for c in classes], "lowercase": lowercase}
    path.write_text(json.dumps(payload))
    return path
