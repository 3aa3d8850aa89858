"""The training loop: AdamW, validation each epoch, early stopping, checkpoints, seeds.

One :class:`Trainer` trains any model with its loss callable: a
:class:`~attnkit.tasks.Recipe`'s model over epochs of a Dataset, or a model fed by an endless
generator of batches for a fixed number of steps (the glimpse models, the testbed LMs); a
baseline and an attention model get the same loop and, through ``max_steps``, the same step
budget. The learning rate is constant or follows a linear warm-up and a cosine decay
(Loshchilov & Hutter 2017, "SGDR"; the warm-up of Goyal et al. 2017).
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from attnkit.train import distributed
from attnkit.train.checkpoint import TrainState, load_checkpoint, save_checkpoint, set_rng_state
from attnkit.train.overfit import OverfitCheck, gap_warnings
from attnkit.train.report import plot_history, write_metrics

__all__ = ["TrainConfig", "TrainResult", "Trainer", "seed_everything"]

log = logging.getLogger("attnkit.train")

SCHEDULES = ("constant", "cosine")
DECAYS = ("matrices", "all")


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the same config gives the same run (seeded shuffling, init and dropout)."""

    epochs: int = 20  # passes over the training split
    batch_size: int = 64  # examples per optimizer step (per process under DDP)
    lr: float = 1e-3  # AdamW (peak) learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay, on the parameters `decay` names
    decay: str = "matrices"  # "matrices": weight decay on ndim >= 2 only; "all": every parameter
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's moment decay rates
    schedule: str = "constant"  # "constant", or "cosine": decay to 0 at the last step
    warmup: int = 0  # steps of linear warm-up to lr: step s (from 0) uses lr * (s + 1) / warmup
    seed: int | None = 0  # seeds torch, numpy, random and the epoch-wise shuffling; None: the
    # caller has seeded (the generators are left as they are; the shuffling uses seed 0)
    patience: int | None = 5  # early stopping: epochs without a lower val loss; None = off
    max_steps: int | None = None  # step budget: stop after this many optimizer steps
    grad_clip: float | None = 1.0  # clip the global gradient norm to this; None = off
    checkpoint_dir: str | Path | None = None  # checkpoint/, metrics.json and loss.png go here
    progress: bool = True  # rich progress bar (shown only on a terminal, only on rank 0)
    device: str | None = None  # "cpu", "cuda", ...; None: the process group's, else cuda if any
    train_metrics: bool = True  # also evaluate metrics on the training split (eval mode; at
    # most as many examples as the validation split, a fixed seeded sample, to bound the cost)
    overfit: OverfitCheck = field(
        default_factory=OverfitCheck
    )  # the train/validation gap detector's settings

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {list(DECAYS)}, got {self.decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        for name in ("patience", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    ``history`` holds one record per epoch (a run over a stream of batches is one epoch):
    ``epoch``, ``step``, ``train_loss`` (running mean over the epoch's batches, in train mode),
    ``val_loss`` and ``val_<metric>`` (when there is a validation set), ``train_<metric>`` (eval
    mode, when ``train_metrics``), ``lr`` and ``seconds``.
    """

    history: list[dict[str, Any]]
    best_epoch: int | None  # epoch with the lowest validation loss
    best_val_loss: float
    stopped_early: bool  # stopped by patience (not by epochs or max_steps)
    steps: int  # optimizer steps taken in all
    warnings: list[str] = field(default_factory=list)  # train/validation gap warnings
    test: dict[str, float] | None = None  # test loss and metrics with the final weights
    seconds: float = 0.0  # wall time of fit
    checkpoint: Path | None = None  # the checkpoint directory, when checkpoint_dir was given
    metrics_path: Path | None = None  # metrics.json
    plot_path: Path | None = None  # loss.png
    losses: list[float] = field(default_factory=list)  # the loss of every step of this call

    @property
    def final(self) -> dict[str, Any]:
        """The record of the best epoch (the weights the model ends with under early stopping)."""
        if self.best_epoch is None:
            return self.history[-1] if self.history else {}
        return next(r for r in self.history if r["epoch"] == self.best_epoch)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [_to_device(value, device) for value in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.dim() else 1
    values = batch.values() if isinstance(batch, dict) else batch
    if isinstance(values, (list, tuple)) or isinstance(batch, dict):
        for value in values:
            size = _batch_size(value)
            if size:
                return size
    return 0


def _sample(dataset: Dataset, size: int, seed: int) -> Dataset:
    """``dataset`` itself, or a fixed seeded sample of ``size`` of its examples."""
    if len(dataset) <= size:  # type: ignore[arg-type]
        return dataset
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[:size]  # type: ignore[arg-type]
    return Subset(dataset, order.tolist())


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.decay == "all":
        groups = [{"params": params, "weight_decay": config.weight_decay}]
    else:  # decay matrices (linear, attention, embedding weights); not biases or norm gains
        decay = [p for p in params if p.dim() >= 2]
        rest = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": config.weight_decay}]
        if rest:
            groups.append({"params": rest, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def lr_factor(step: int, total: int, config: TrainConfig) -> float:
    """The learning rate of step ``step`` (counted from 0) of ``total``, as a share of ``lr``.

    ``(step + 1) / warmup`` during the warm-up; then 1 (``"constant"``) or
    ``0.5 (1 + cos(pi (step - warmup) / (total - warmup)))`` (``"cosine"``).
    """
    if step < config.warmup:
        return (step + 1) / config.warmup
    if config.schedule == "constant":
        return 1.0
    progress = (step - config.warmup) / max(1, total - config.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Train a model with its loss callable: AdamW, early stopping, checkpoints, seeds.

    Args:
        model: the model; trained in place (ends with the best epoch's weights when early
            stopping is on).
        config: a :class:`TrainConfig`.
        loss: ``(model, batch) -> scalar`` to minimise (extra terms, e.g. REINFORCE's, are
            part of it).
        metrics: optional ``(model, batch) -> {name: value}``; averaged over examples.
        model_config: the model's config dataclass, saved in checkpoints.
        on_step: optional ``(step, loss) -> None``, called after every optimizer step with the
            number of steps taken so far (from 1) and that step's loss (e.g. a progress bar).

    Example::

        result = Trainer(model, TrainConfig(epochs=10), loss=loss).fit(train, val)
        result.history[-1]["val_loss"], result.best_epoch, result.warnings

        # a fixed step budget over an endless generator of batches, warm-up and cosine decay
        config = TrainConfig(max_steps=700, warmup=100, schedule="cosine", patience=None)
        result = Trainer(model, config, loss=loss).fit(batches())
        result.losses  # one per step
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        loss: Callable[[nn.Module, Any], Tensor],
        metrics: Callable[[nn.Module, Any], dict[str, float]] | None = None,
        model_config: Any = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss):
            raise TypeError(f"loss must be callable (model, batch) -> Tensor, got {loss!r}")
        self.model = model
        self.config = config if config is not None else TrainConfig()
        self.loss = loss
        self.metrics = metrics
        self.model_config = model_config
        self.on_step = on_step
        self.rank, self.world = distributed.rank_and_world()
        if self.config.device is not None:
            self.device = torch.device(self.config.device)
        elif distributed.is_distributed():
            self.device = distributed.local_device()
        else:
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @torch.no_grad()
    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """Loss and metrics over ``dataset`` in eval mode, averaged over examples.

        Returns ``{"loss": ..., <metric>: ...}``. Every process evaluates the whole dataset.
        """
        was_training = self.model.training
        self.model.eval()
        totals: dict[str, float] = {}
        count = 0
        loader = DataLoader(dataset, batch_size=self.config.batch_size, shuffle=False)
        for batch in loader:
            batch = _to_device(batch, self.device)
            size = _batch_size(batch)
            values = {"loss": float(self.loss(self.model, batch))}
            if self.metrics is not None:
                values.update({k: float(v) for k, v in self.metrics(self.model, batch).items()})
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value * size
            count += size
        self.model.train(was_training)
        if count == 0:
            raise ValueError("dataset must not be empty")
        return {key: value / count for key, value in totals.items()}

    def fit(
        self,
        train: Dataset | Iterator[Any],
        val: Dataset | None = None,
        test: Dataset | None = None,
        *,
        resume: str | Path | None = None,
    ) -> TrainResult:
        """Train on ``train``, validate on ``val`` each epoch, evaluate ``test`` at the end.

        Args:
            train: a torch Dataset (epochs over a seeded shuffled order; batches are the default
                collation), or an iterator of ready batches (a generator), read lazily, one
                batch per optimizer step, for ``max_steps`` steps (one epoch); under DDP each
                process's iterator should yield its own batches.
            val: a Dataset for validation, early stopping and the train/validation gap; None:
                no validation (then no early stopping either).
            test: a Dataset evaluated once at the end, with the restored best weights.
            resume: a checkpoint directory (or the ``checkpoint_dir`` holding ``checkpoint/``)
                to continue from; the run then ends as the uninterrupted run would have (a
                Dataset ``train`` only: a generator's position is not saved).
        """
        config = self.config
        stream = isinstance(train, Iterator)
        if stream and config.max_steps is None:
            raise ValueError("max_steps must be set when train is an iterator of batches, got None")
        if stream and resume is not None:
            raise ValueError("resume needs a Dataset train (an iterator's position is not saved)")
        for name, data in (("train", None if stream else train), ("val", val)):
            if data is not None and len(data) == 0:  # type: ignore[arg-type]
                raise ValueError(f"{name} dataset must not be empty")
        started = time.perf_counter()
        if config.seed is not None:
            seed_everything(config.seed)
        self.model.to(self.device)
        optimizer = _optimizer(self.model, config)
        state, best = TrainState(), None
        if resume is not None:
            state, best = self._restore(Path(resume), optimizer)
        sampler = None
        if stream:
            loader: Iterable[Any] = train
            total = config.max_steps
        else:
            sampler = DistributedSampler(
                train, num_replicas=self.world, rank=self.rank, shuffle=True, seed=config.seed or 0
            )
            loader = DataLoader(train, batch_size=config.batch_size, sampler=sampler)
            total = config.epochs * len(loader)
            if config.max_steps is not None:
                total = min(total, config.max_steps)
        step_module = distributed.wrap(self.model, self.loss)
        stopped_early = self._stopped(state)
        out = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
        checkpoint = None
        losses: list[float] = []
        with self._progress() as progress:
            for epoch in range(state.epoch + 1, (1 if stream else config.epochs) + 1):
                if stopped_early or self._out_of_steps(state):
                    break
                epoch_started = time.perf_counter()
                if sampler is not None:
                    sampler.set_epoch(epoch)
                train_loss = self._train_epoch(
                    step_module, loader, optimizer, state, progress, total, losses
                )
                record = {"epoch": epoch, "step": state.step, "train_loss": train_loss}
                if val is not None:
                    val_values = self.evaluate(val)
                    record.update({f"val_{key}": value for key, value in val_values.items()})
                    if config.train_metrics and self.metrics is not None and not stream:
                        train_values = self.evaluate(_sample(train, len(val), config.seed or 0))
                        record.update(
                            {f"train_{k}": v for k, v in train_values.items() if k != "loss"}
                        )
                record["lr"] = optimizer.param_groups[0]["lr"]
                record["seconds"] = time.perf_counter() - epoch_started
                if val is not None:
                    best = self._early_stopping(record, state, best)
                state.history.append(record)
                state.epoch = epoch
                if val is not None:
                    for warning in gap_warnings(state.history, config.overfit):
                        log.warning(warning)
                        state.warnings.append(warning)
                log.info(_describe(record))
                stopped_early = self._stopped(state)
                if out is not None and self.rank == 0:
                    checkpoint = save_checkpoint(
                        out / "checkpoint",
                        self.model,
                        optimizer,
                        state,
                        best=best,
                        train_config=config,
                        model_config=self.model_config,
                    )
        if config.patience is not None and best is not None:
            self.model.load_state_dict(best)
        result = TrainResult(
            history=state.history,
            best_epoch=state.best_epoch,
            best_val_loss=state.best_val_loss,
            stopped_early=stopped_early,
            steps=state.step,
            warnings=list(state.warnings),
            test=self.evaluate(test) if test is not None else None,
            checkpoint=checkpoint,
            losses=losses,
        )
        result.seconds = time.perf_counter() - started
        if out is not None and self.rank == 0:
            result.metrics_path = write_metrics(result, config, out / "metrics.json")
            result.plot_path = plot_history(result.history, out / "loss.png")
        return result

    def _train_epoch(
        self,
        step_module: nn.Module,
        loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        state: TrainState,
        progress: Any,
        total: int,
        losses: list[float],
    ) -> float:
        config = self.config
        scheduled = config.schedule != "constant" or config.warmup > 0
        self.model.train()
        running, count = 0.0, 0
        task = None
        if progress is not None:  # one bar, reset each epoch
            task = progress.task_ids[0] if progress.task_ids else progress.add_task("", total=None)
            length = len(loader) if isinstance(loader, DataLoader) else total  # type: ignore[arg-type]
            progress.reset(task, total=length, description=_bar(state, config, None))
        for batch in loader:
            batch = _to_device(batch, self.device)
            if scheduled:
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * lr_factor(state.step, total, config)
            optimizer.zero_grad(set_to_none=True)
            loss = step_module(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {state.step + 1}")
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            optimizer.step()
            state.step += 1
            value = loss.item()
            losses.append(value)
            size = _batch_size(batch)
            running += value * size
            count += size
            if self.on_step is not None:
                self.on_step(state.step, value)
            if task is not None:
                progress.update(task, advance=1, description=_bar(state, config, running / count))
            if self._out_of_steps(state):
                break
        return distributed.all_reduce_mean(running / max(count, 1), self.device)

    def _early_stopping(
        self, record: dict[str, Any], state: TrainState, best: dict[str, Tensor] | None
    ) -> dict[str, Tensor] | None:
        if record["val_loss"] < state.best_val_loss:
            state.best_val_loss, state.best_epoch = record["val_loss"], record["epoch"]
            state.bad_epochs = 0
            if self.config.patience is not None:
                return {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return best
        state.bad_epochs += 1
        return best

    def _stopped(self, state: TrainState) -> bool:
        return self.config.patience is not None and state.bad_epochs >= self.config.patience

    def _out_of_steps(self, state: TrainState) -> bool:
        return self.config.max_steps is not None and state.step >= self.config.max_steps

    def _restore(
        self, path: Path, optimizer: torch.optim.Optimizer
    ) -> tuple[TrainState, dict[str, Tensor] | None]:
        if not (path / "state.json").is_file() and (path / "checkpoint").is_dir():
            path = path / "checkpoint"
        saved = load_checkpoint(path)
        self.model.load_state_dict(saved.weights)
        optimizer.load_state_dict(saved.optimizer)
        set_rng_state(saved.rng)
        best = saved.best
        if best is not None:
            best = {k: v.to(self.device) for k, v in best.items()}
        log.info(
            "resumed from %s after epoch %d, step %d", path, saved.state.epoch, saved.state.step
        )
        return saved.state, best

    def _progress(self) -> Any:
        if not self.config.progress or self.rank != 0 or not sys.stderr.isatty():
            return nullcontext(None)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        return Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )


def _bar(state: TrainState, config: TrainConfig, loss: float | None) -> str:
    last = state.history[-1] if state.history else None
    text = f"epoch {state.epoch + 1}/{config.epochs}"
    if loss is not None:
        text += f" loss {loss:.4f}"
    return text + (f" (last val {last['val_loss']:.4f})" if last else "")


def _describe(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"step {record['step']}"]
    parts += [f"{k} {v:.4f}" for k, v in record.items() if k.startswith(("train_", "val_"))]
    return ", ".join(parts)
