"""Training and evaluation of the recurrent glimpse models (Mnih et al. 2014) and their CNN
reference on cluttered digits, composed on :class:`~attnkit.train.Trainer`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from attnkit.attention.hard_training import anneal_temperature
from attnkit.models.glimpse import ConvNet, GlimpseNetwork
from attnkit.train.loop import TrainConfig, Trainer

__all__ = ["evaluate", "train_classifier"]

Model = GlimpseNetwork | ConvNet


def _loss(model: Model, batch: tuple[Tensor, Tensor]) -> Tensor:
    images, labels = batch
    return model.loss(model(images), labels)  # REINFORCE's terms included for "reinforce"


def train_classifier(
    model: Model,
    batches: Callable[[int], tuple[Tensor, Tensor]],
    steps: int,
    lr: float = 1e-3,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` with Adam for ``steps`` steps and return the loss of each step.

    One :class:`~attnkit.train.Trainer` run over the stream ``batches(0), batches(1), ...``:
    Adam (AdamW without weight decay), constant ``lr``, no gradient clipping, and the torch
    generator left as the caller seeded it. For ``"gumbel"`` the locator's temperature follows
    :func:`~attnkit.attention.hard_training.anneal_temperature` from 1 down to 0.5 at 70% of the
    steps (Jang et al. 2017), set before each step's forward.

    Args:
        model: a :class:`~attnkit.models.glimpse.GlimpseNetwork` or
            :class:`~attnkit.models.glimpse.ConvNet`.
        batches: ``step -> (images (B, 1, S, S), labels (B,))``.
        steps: optimizer steps.
        lr: Adam learning rate.
        on_step: called with ``(step, loss)`` after each step (step from 0; e.g. a progress bar).
    """
    gumbel = isinstance(model, GlimpseNetwork) and model.config.attention == "gumbel"
    rate = math.log(2.0) / max(1.0, 0.7 * steps)

    def stream() -> Iterator[tuple[Tensor, Tensor]]:
        for step in itertools.count():
            if gumbel:
                model.locator.temperature = anneal_temperature(step, 1.0, 0.5, rate)
            yield batches(step)

    config = TrainConfig(
        max_steps=steps, lr=lr, grad_clip=None, seed=None, patience=None, progress=False,
        device=str(next(model.parameters()).device),
    )  # fmt: skip
    report = None if on_step is None else (lambda step, loss: on_step(step - 1, loss))
    result = Trainer(model, config, loss=_loss, on_step=report).fit(stream())
    return result.losses


@torch.no_grad()
def evaluate(model: Model, images: Tensor, labels: Tensor, batch_size: int = 500) -> dict:
    """Accuracy and reading cost on held-out data, in eval mode (deterministic glimpses).

    Returns:
        ``{"accuracy", "pixels_read" (numbers read per image), "coverage" (mean fraction of the
        canvas inside some window), "locations" ((N_images, glimpses) int64)}``.
    """
    model.eval()
    correct, coverage, paths = 0, 0.0, []
    values = 0
    for start in range(0, len(images), batch_size):
        result = model(images[start : start + batch_size])
        batch_labels = labels[start : start + batch_size]
        correct += (result.logits.argmax(-1) == batch_labels).sum().item()
        values, covered = model.pixels_read(result.locations)
        coverage += covered.sum().item()
        paths.append(result.locations)
    return {
        "accuracy": correct / len(images),
        "pixels_read": values,
        "coverage": coverage / len(images),
        "locations": torch.cat(paths),
    }
