"""The date-normalization task (:mod:`attnkit.data.dates`) for a
:class:`~attnkit.models.seq2seq.Seq2Seq` with Bahdanau attention or its fixed-context baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnkit.models.seq2seq import ATTENTIONS, Seq2Seq, Seq2SeqConfig, exact_match, sequence_loss
from attnkit.tasks.recipe import Recipe

__all__ = ["dates_recipe"]


def dates_recipe(
    attention: str = "soft",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """Date normalization (:func:`attnkit.data.dates.make_date_task`), ready to train.

    Args:
        attention: ``"soft"`` (Bahdanau) or ``"none"`` (fixed context).
        seed: seeds the model's initialization and the choice of the training subset; the
            data set itself is fixed by ``task_seed``.
        fraction: share of the training split kept, in ``(0, 1]``.
        data: not supported (the task is generated); must be ``None``.
        options: ``n_train`` (8000), ``n_val`` (1000), ``n_test`` (2000), ``task_seed`` (0),
            ``label_smoothing`` (0.0) and any :class:`~attnkit.models.seq2seq.Seq2SeqConfig`
            field (``embed_dim``, ``hidden``, ``attention_dim``, ``dropout``).

    A batch is a dict from :class:`~attnkit.data.dates.DateSplit`; metrics are the
    teacher-forced ``token_accuracy`` and the greedy ``exact_match``.
    """
    from attnkit.data.dates import make_date_task

    if attention not in ATTENTIONS:
        raise ValueError(
            f"attention must be one of {list(ATTENTIONS)} for the dates task, got {attention!r}"
        )
    if data is not None:
        raise ValueError(f"data: the dates task is generated and reads no file, got {data!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    options = dict(options)
    task = make_date_task(
        n_train=options.pop("n_train", 8000),
        n_val=options.pop("n_val", 1000),
        n_test=options.pop("n_test", 2000),
        seed=options.pop("task_seed", 0),
    )
    label_smoothing = options.pop("label_smoothing", 0.0)
    fields = set(Seq2SeqConfig.__dataclass_fields__) - {"attention"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for dates_recipe; known: {sorted(fields)}")
    config = Seq2SeqConfig(
        source_vocab_size=len(task.source_vocab),
        target_vocab_size=len(task.target_vocab),
        attention=attention,
        bos_id=task.target_vocab.tokens.index("<s>"),
        eos_id=task.target_vocab.tokens.index("</s>"),
        **options,
    )
    torch.manual_seed(seed)
    model = Seq2Seq(config)
    train = task.train
    if fraction < 1.0:
        keep = max(1, round(fraction * len(train)))
        train = train.subset(torch.randperm(len(train), generator=_generator(seed))[:keep])

    def loss(model: Seq2Seq, batch: dict[str, Tensor]) -> Tensor:
        result = model(batch["source"], batch["length"], batch["target"])
        return sequence_loss(result.logits, batch["target"], config.pad_id, label_smoothing)

    @torch.no_grad()
    def metrics(model: Seq2Seq, batch: dict[str, Tensor]) -> dict[str, float]:
        target = batch["target"]
        forced = model(batch["source"], batch["length"], target).tokens
        real = target != config.pad_id
        decoded = model.generate(batch["source"], batch["length"], target.shape[1]).tokens
        return {
            "token_accuracy": float((forced == target)[real].float().mean()),
            "exact_match": float(exact_match(decoded, target, config.pad_id).float().mean()),
        }

    return Recipe(
        name=f"dates-{attention}",
        model=model,
        train=train,
        val=task.val,
        test=task.test,
        loss=loss,
        metrics=metrics,
        config=config,
    )


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
