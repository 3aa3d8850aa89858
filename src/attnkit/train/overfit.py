"""The train/validation gap detector: warns while a model starts to overfit.

Two signs, checked after every epoch on the trainer's history:

* **diverging losses**: the validation loss rose while the training loss fell, epoch over
  epoch, for ``epochs`` epochs in a row (the classic overfitting curve; Prechelt 1998,
  "Early stopping — but when?");
* **accuracy gap**: training accuracy exceeds validation accuracy by more than
  ``accuracy_gap`` (absolute), when the task reports ``train_<metric>`` and ``val_<metric>``.

Each sign warns once per run, at the first epoch it appears (a gap that hovers around the
threshold would otherwise warn every few epochs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["OverfitCheck", "gap_warnings"]


@dataclass(frozen=True)
class OverfitCheck:
    """Settings of the gap detector (the defaults are attnkit's documented defaults)."""

    epochs: int = 3  # consecutive epochs of rising val loss with falling train loss; 0 = off
    accuracy_gap: float | None = 0.15  # train minus val metric above this warns; None = off
    metric: str = "accuracy"  # the metric compared, read as train_<metric> and val_<metric>

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.accuracy_gap is not None and not 0 < self.accuracy_gap < 1:
            raise ValueError(f"accuracy_gap must be in (0, 1) or None, got {self.accuracy_gap}")


def _diverging(history: Sequence[dict[str, Any]], end: int, epochs: int) -> bool:
    """Whether epochs ``end - epochs + 1 .. end`` each raised val loss and lowered train loss."""
    if epochs == 0 or end < epochs:
        return False
    for i in range(end - epochs + 1, end + 1):
        before, now = history[i - 1], history[i]
        if not (now["val_loss"] > before["val_loss"] and now["train_loss"] < before["train_loss"]):
            return False
    return True


def _gap(history: Sequence[dict[str, Any]], end: int, check: OverfitCheck) -> float | None:
    """Train minus validation metric at epoch index ``end``, when both are recorded."""
    if end < 0:
        return None
    record = history[end]
    train, val = record.get(f"train_{check.metric}"), record.get(f"val_{check.metric}")
    if train is None or val is None:
        return None
    return train - val


def _gap_over(history: Sequence[dict[str, Any]], end: int, check: OverfitCheck) -> bool:
    gap = _gap(history, end, check)
    return gap is not None and check.accuracy_gap is not None and gap > check.accuracy_gap


def gap_warnings(history: Sequence[dict[str, Any]], check: OverfitCheck) -> list[str]:
    """Warnings that appear at the last epoch of ``history``.

    Args:
        history: per-epoch records with ``epoch``, ``train_loss``, ``val_loss`` and optionally
            ``train_<metric>`` and ``val_<metric>``.
        check: the detector's settings.

    Returns:
        Zero, one or two sentences: the signs that appear at the last epoch for the first time.
    """
    if not history:
        return []
    end, epoch = len(history) - 1, history[-1]["epoch"]
    warnings = []
    if _diverging(history, end, check.epochs) and not any(
        _diverging(history, i, check.epochs) for i in range(end)
    ):
        warnings.append(
            f"epoch {epoch}: validation loss rose while training loss fell for {check.epochs} "
            f"epochs in a row (val {history[end - check.epochs]['val_loss']:.4f} -> "
            f"{history[end]['val_loss']:.4f}): the model is overfitting"
        )
    if _gap_over(history, end, check) and not any(_gap_over(history, i, check) for i in range(end)):
        warnings.append(
            f"epoch {epoch}: train {check.metric} exceeds validation {check.metric} by "
            f"{_gap(history, end, check):.3f} (> {check.accuracy_gap}): the model is overfitting"
        )
    return warnings
