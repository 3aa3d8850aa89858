"""What a run leaves behind: metrics JSON and a plot of the loss curves."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from attnkit.train.loop import TrainConfig, TrainResult

__all__ = ["plot_history", "write_metrics"]

log = logging.getLogger("attnkit.train")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics(result: TrainResult, config: TrainConfig, path: Path) -> Path:
    """Write the run's config, history, best epoch, warnings and test metrics as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": {k: _clean(v) for k, v in dataclasses.asdict(config).items()},
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_val_loss": _clean(result.best_val_loss),
        "stopped_early": result.stopped_early,
        "steps": result.steps,
        "warnings": result.warnings,
        "test": result.test,
        "seconds": result.seconds,
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def plot_history(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Plot train and validation loss (and accuracy-like metrics) per epoch to a PNG.

    Returns None (and plots nothing) when matplotlib is not installed or history is empty.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed; no loss plot")
        return None
    if not history:
        return None
    epochs = [r["epoch"] for r in history]
    metrics = sorted(
        {k[4:] for r in history for k in r if k.startswith("val_") and k != "val_loss"}
    )
    figure, axes = plt.subplots(1, 2 if metrics else 1, figsize=(10 if metrics else 5, 3.5))
    axes = np.atleast_1d(axes)
    axes[0].plot(epochs, [r["train_loss"] for r in history], label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in history], label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
    axes[0].legend()
    if metrics:
        for name in metrics:
            axes[1].plot(epochs, [r.get(f"val_{name}") for r in history], label=f"val {name}")
            if any(f"train_{name}" in r for r in history):
                axes[1].plot(
                    epochs, [r.get(f"train_{name}") for r in history], "--", label=f"train {name}"
                )
        axes[1].set(xlabel="epoch", title="metrics")
        axes[1].legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
