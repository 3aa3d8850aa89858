"""What ``attnkit train`` does: build the task's recipe, train it, report the numbers."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch.distributed

from attnkit.tasks.registry import load_recipe
from attnkit.train.distributed import init_from_env, is_distributed, rank_and_world
from attnkit.train.loop import TrainConfig, Trainer, TrainResult

__all__ = ["DATA_FILE", "train_task"]

DATA_FILE = "data.json"  # in a text run's --out: the data file and the options that split it


def train_task(
    task: str,
    *,
    attention: str,
    config: TrainConfig,
    fraction: float,
    data: Path | None,
    resume: bool,
    options: dict[str, Any],
) -> TrainResult:
    """Train ``task`` with ``config`` (joining a ``torchrun`` process group if there is one),
    print the metrics table and the output paths, and return the result."""
    joined = not is_distributed() and init_from_env()
    try:
        return _train_and_report(task, attention, config, fraction, data, resume, options)
    finally:
        if joined:
            torch.distributed.barrier()  # no rank tears the group down while another uses it
            torch.distributed.destroy_process_group()


def _train_and_report(
    task: str,
    attention: str,
    config: TrainConfig,
    fraction: float,
    data: Path | None,
    resume: bool,
    options: dict[str, Any],
) -> TrainResult:
    from rich.console import Console
    from rich.table import Table

    rank, world = rank_and_world()
    recipe = load_recipe(
        task, attention=attention, seed=config.seed, fraction=fraction, data=data, **options
    )
    out = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    if resume and (out is None or not (out / "checkpoint" / "state.json").is_file()):
        raise ValueError(f"--resume needs a checkpoint in {out}/checkpoint; there is none")
    trainer = Trainer(
        recipe.model, config, loss=recipe.loss, metrics=recipe.metrics, model_config=recipe.config
    )
    with _epoch_lines(not config.progress and rank == 0):
        result = trainer.fit(recipe.train, recipe.val, recipe.test, resume=out if resume else None)
    if rank != 0:
        return result
    vocabulary = getattr(recipe.train, "vocabulary", None)
    if out is not None and vocabulary is not None:  # text tasks: what `attnkit explain` reads
        from attnkit.data.text import save_vocabulary

        lowercase = bool(options.get("lowercase", True)) if data is not None else True
        save_vocabulary(out, vocabulary.tokens, recipe.train.classes, lowercase)
        if data is not None:  # what `attnkit faithfulness` needs to find the same test split
            from attnkit.tasks.text import FILE_OPTIONS

            split = {k: v for k, v in options.items() if k in FILE_OPTIONS}
            record = {"path": str(data), "seed": config.seed, "options": split}
            (out / DATA_FILE).write_text(json.dumps(record, indent=2))
    console = Console()
    title = f"{recipe.name}, attention={attention}, {result.steps} steps"
    if world > 1:
        title += f" on {world} processes"
    table = Table(title=title)
    for column in ("split", "loss", *_metric_names(result)):
        table.add_column(column)
    best = result.final
    rows = [
        ("train", best.get("train_loss"), {k[6:]: v for k, v in best.items() if k[:6] == "train_"})
    ]
    rows.append(
        ("val", best.get("val_loss"), {k[4:]: v for k, v in best.items() if k[:4] == "val_"})
    )
    if result.test is not None:
        rows.append(("test", result.test.get("loss"), result.test))
    for split, loss, values in rows:
        cells = [_number(values.get(name)) for name in _metric_names(result)]
        table.add_row(split, _number(loss), *cells)
    console.print(table)
    console.print(
        f"best epoch {result.best_epoch} of {len(result.history)}"
        + (" (stopped early)" if result.stopped_early else "")
    )
    for warning in result.warnings:
        console.print(f"[yellow]warning: {warning}[/yellow]")
    for label, path in (
        ("checkpoint", result.checkpoint),
        ("metrics", result.metrics_path),
        ("plot", result.plot_path),
    ):
        if path is not None:
            console.print(f"{label}: {path}")
    return result


@contextmanager
def _epoch_lines(on: bool):
    """While on, print the trainer's one-line summary of each epoch to stdout (what the
    progress bar shows when it is on)."""
    if not on:
        yield
        return
    logger = logging.getLogger("attnkit.train")
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(lambda record: record.levelno == logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _metric_names(result: TrainResult) -> list[str]:
    last = result.final
    return [k[4:] for k in last if k.startswith("val_") and k != "val_loss"]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
