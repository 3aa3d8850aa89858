"""The text-classification task: the evidence task or a user's file, for a
:class:`~attnkit.models.text.TextClassifier` (attention pooling) or its mean-pooling baseline."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.data.text import load_text_file
from attnkit.models.text import ATTENTIONS, TextClassifier, TextClassifierConfig
from attnkit.tasks.recipe import Recipe

if TYPE_CHECKING:
    from attnkit.data.text import TextDataset

__all__ = ["EVIDENCE_OPTIONS", "FILE_OPTIONS", "text_recipe"]


def _keep_fraction(dataset: TextDataset, fraction: float, seed: int) -> TextDataset:
    if fraction == 1.0:
        return dataset
    keep = max(1, round(fraction * len(dataset)))
    generator = torch.Generator().manual_seed(seed)
    return dataset.subset(torch.randperm(len(dataset), generator=generator)[:keep])


def _pop(options: dict[str, Any], names: dict[str, Any]) -> dict[str, Any]:
    return {name: options.pop(name, default) for name, default in names.items()}


EVIDENCE_OPTIONS = {
    "n": 4000, "length": 40, "classes": 4, "evidence_per_example": 1, "words_per_class": 3,
    "fillers": 200, "task_seed": 0,
}  # fmt: skip
"""Options of :func:`text_recipe` that shape the evidence task, with their defaults."""
FILE_OPTIONS = {
    name: parameter.default
    for name, parameter in inspect.signature(load_text_file).parameters.items()
    if name not in ("path", "seed")
}
"""Options of :func:`text_recipe` for reading a user's file, with their defaults: those of
:func:`attnkit.data.text.load_text_file`, read from its signature (the split's shuffle uses the
recipe's ``seed``)."""


def text_recipe(
    attention: str = "soft",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """Text classification for :class:`~attnkit.train.Trainer`.

    Without ``data``: the generated evidence task (:func:`attnkit.data.evidence.make_evidence_task`,
    80/10/10 split), whose batches carry the evidence mask, so the metrics add
    ``evidence_weight``, the pooling weight that falls on the evidence words. With ``data``: the
    user's ``.csv``/``.tsv``/``.jsonl`` file (:func:`attnkit.data.text.load_text_file`).

    Args:
        attention: ``"soft"``, ``"hard"``, ``"multihead"`` or ``"none"``.
        seed: seeds the model's initialization and the choice of the training subset.
        fraction: share of the training split kept, in ``(0, 1]``.
        data: a user's text file, or ``None`` for the evidence task.
        options: ``label_smoothing`` (0.0); for the evidence task the keys of
            :data:`EVIDENCE_OPTIONS`, for a file those of :data:`FILE_OPTIONS`; ``embeddings``:
            initial word vectors (:func:`attnkit.data.vectors.pretrained_vectors`: a word2vec
            text or GloVe file, ``"minilm"`` or a Hugging Face model directory; ``embed_dim``
            becomes theirs); and any :class:`~attnkit.models.text.TextClassifierConfig` field
            (``encoder``, ``freeze_embeddings``, ``embed_dim``, ``hidden``, ``dropout``, ...).
    """
    from attnkit.data.evidence import make_evidence_task
    from attnkit.data.text import evidence_dataset

    if attention not in ATTENTIONS:
        raise ValueError(
            f"attention must be one of {list(ATTENTIONS)} for the text task, got {attention!r}"
        )
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    options = dict(options)
    label_smoothing = options.pop("label_smoothing", 0.0)
    embeddings = options.pop("embeddings", None)
    if data is None:
        task_options = _pop(options, EVIDENCE_OPTIONS)
        n, task_seed = task_options.pop("n"), task_options.pop("task_seed")
        full = evidence_dataset(make_evidence_task(n, seed=task_seed, **task_options))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(task_seed))
        n_val = n_test = max(1, n // 10)
        val, test = full.subset(order[:n_val]), full.subset(order[n_val : n_val + n_test])
        train = full.subset(order[n_val + n_test :])
        name = "text-evidence"
    else:
        loaded = load_text_file(data, seed=seed, **_pop(options, FILE_OPTIONS))
        train, val, test = loaded.train, loaded.val, loaded.test
        if len(val) == 0:
            raise ValueError(
                f"{data}: no validation rows (the trainer validates every epoch); give the file "
                "'dev' rows or set -o val_fraction= above 0"
            )
        test = test if len(test) else None  # -o test_fraction=0: no test split
        name = f"text-{Path(data).stem}"
    known = {f.name for f in fields(TextClassifierConfig)} - {"attention", "vocab_size", "classes"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for text_recipe; known: {sorted(known)}")
    vectors = None
    if embeddings is not None:
        from attnkit.data.vectors import pretrained_vectors

        vectors = pretrained_vectors(embeddings, train.vocabulary.tokens, seed).vectors
        if "embed_dim" in options and options["embed_dim"] != vectors.shape[1]:
            raise ValueError(
                f"embed_dim ({options['embed_dim']}) must be the pretrained vectors' size "
                f"({vectors.shape[1]}) with embeddings={embeddings!r}; leave it out"
            )
        options["embed_dim"] = vectors.shape[1]
    config = TextClassifierConfig(
        vocab_size=len(train.vocabulary),
        classes=len(train.classes),
        attention=attention,
        **options,
    )
    torch.manual_seed(seed)
    model = TextClassifier(config)
    if vectors is not None:
        with torch.no_grad():
            model.embed.weight.copy_(vectors)

    def loss(model: TextClassifier, batch: dict[str, Tensor]) -> Tensor:
        logits = model(batch["tokens"], batch["mask"]).logits
        return F.cross_entropy(logits, batch["label"], label_smoothing=label_smoothing)

    @torch.no_grad()
    def metrics(model: TextClassifier, batch: dict[str, Tensor]) -> dict[str, float]:
        result = model(batch["tokens"], batch["mask"])
        values = {"accuracy": float((result.logits.argmax(-1) == batch["label"]).float().mean())}
        if "evidence" in batch:
            mass = (result.weights * batch["evidence"]).sum(-1)  # (B,)
            values["evidence_weight"] = float(mass.mean())
        return values

    return Recipe(
        name=f"{name}-{attention}",
        model=model,
        train=_keep_fraction(train, fraction, seed),
        val=val,
        test=test,
        loss=loss,
        metrics=metrics,
        config=config,
    )
