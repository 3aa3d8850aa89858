"""Attention overfits small data: which controls close the train/test gap?

Trains one attention model on 5% of its training split with no regularization, then with one
control at a time (attention dropout, DropHead, weight decay, early stopping, label smoothing)
and with all of them, over several seeds; the same model on the full split shows what the
gap looks like with enough data. Reports train, validation and test accuracy (eval mode, the
weights the run ends with), the gap ``train - test`` and the share of the unregularized gap each
control closes, with the train/validation gap detector's first warning. Writes
``results/overfitting.{md,json}`` and ``results/overfitting.png`` (train/val curves).

    flock /tmp/attnkit-heavy.lock python benchmarks/overfitting.py          # ~5 minutes
    python benchmarks/overfitting.py --fast                                 # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.tasks import load_recipe
from attnkit.train import TrainConfig, Trainer
from harness import RESULTS, machine, markdown_table, write_results

# every regularizer off; each control turns one on (recipe option or TrainConfig override)
BASE = {"dropout": 0.0, "attention_dropout": 0.0, "head_dropout": 0.0, "label_smoothing": 0.0}
# control -> (recipe options, TrainConfig overrides); strengths are common defaults, not tuned
CONTROLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "none": ({}, {}),
    "dropout 0.1 (embeddings, residual)": ({"dropout": 0.1}, {}),
    "attention dropout 0.2": ({"attention_dropout": 0.2}, {}),
    "DropHead 0.3": ({"head_dropout": 0.3}, {}),
    "weight decay 0.5": ({}, {"weight_decay": 0.5}),
    "early stopping (patience 10)": ({}, {"patience": 10}),
    "label smoothing 0.1": ({"label_smoothing": 0.1}, {}),
}
CONTROLS["all combined"] = (
    {k: v for options, _ in CONTROLS.values() for k, v in options.items()},
    {k: v for _, overrides in CONTROLS.values() for k, v in overrides.items()},
)
FULL = "none, 100% of the data"


def run_one(
    task: str, attention: str, fraction: float, seed: int, control: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Train one configuration; return its accuracies, gap, history and warnings."""
    options, overrides = CONTROLS["none" if control == FULL else control]
    recipe = load_recipe(
        task, attention=attention, seed=seed, fraction=fraction, **{**BASE, **options}
    )
    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": seed,
        "patience": None,
        "progress": False,
        "device": "cpu",
        "max_steps": args.full_steps if control == FULL else None,
        **overrides,
    }
    trainer = Trainer(
        recipe.model, TrainConfig(**settings), loss=recipe.loss, metrics=recipe.metrics
    )
    started = time.perf_counter()
    result = trainer.fit(recipe.train, recipe.val, recipe.test)
    train = trainer.evaluate(recipe.train)
    val = trainer.evaluate(recipe.val)
    return {
        "control": control,
        "seed": seed,
        "train_size": len(recipe.train),
        "train_accuracy": train["accuracy"],
        "val_accuracy": val["accuracy"],
        "test_accuracy": result.test["accuracy"],
        "gap": train["accuracy"] - result.test["accuracy"],
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "seconds": time.perf_counter() - started,
        "first_warning": result.warnings[0] if result.warnings else None,
        "history": result.history,
    }


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def summarize(runs: list[dict[str, Any]], controls: list[str]) -> tuple[list[dict], str]:
    """Per-control means over seeds and the markdown table."""
    by = {c: [r for r in runs if r["control"] == c] for c in controls}
    base_gap = statistics.mean(r["gap"] for r in by["none"])
    base_test = statistics.mean(r["test_accuracy"] for r in by["none"])
    summary, rows = [], []
    for control in controls:
        group = by[control]
        gap = statistics.mean(r["gap"] for r in group)
        test = statistics.mean(r["test_accuracy"] for r in group)
        warned = [r["first_warning"] for r in group if r["first_warning"]]
        first = min((int(w.split()[1].rstrip(":")) for w in warned), default=None)
        entry = {
            "control": control,
            "train_size": group[0]["train_size"],
            "train_accuracy": statistics.mean(r["train_accuracy"] for r in group),
            "val_accuracy": statistics.mean(r["val_accuracy"] for r in group),
            "test_accuracy": test,
            "gap": gap,
            "gap_closed": None if control == FULL else (base_gap - gap) / base_gap,
            "test_change": test - base_test,
            "warned_runs": len(warned),
            "first_warning_epoch": first,
            "epochs_run": statistics.mean(r["epochs_run"] for r in group),
        }
        summary.append(entry)
        rows.append(
            [
                control,
                entry["train_size"],
                _mean_sd([r["train_accuracy"] for r in group]),
                _mean_sd([r["val_accuracy"] for r in group]),
                _mean_sd([r["test_accuracy"] for r in group]),
                _mean_sd([r["gap"] for r in group]),
                "" if entry["gap_closed"] is None else f"{100 * entry['gap_closed']:.0f}%",
                f"{100 * entry['test_change']:+.1f} pt",
                f"{len(warned)}/{len(group)}" + (f" (epoch {first})" if first else ""),
            ]
        )
    headers = [
        "control", "train n", "train acc", "val acc", "test acc", "gap (train-test)",
        "gap closed", "test vs none", "gap warning",
    ]  # fmt: skip
    return summary, markdown_table(headers, rows)


def plot(runs: list[dict[str, Any]], controls: list[str], path: Path) -> None:
    """Train and validation accuracy per epoch (seed 0): none vs all combined, and the val loss
    of every control."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed0 = {r["control"]: r["history"] for r in runs if r["seed"] == runs[0]["seed"]}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for control, color in (("none", "tab:red"), ("all combined", "tab:blue")):
        history = seed0[control]
        epochs = [h["epoch"] for h in history]
        left.plot(epochs, [h["train_accuracy"] for h in history], "--", color=color,
                  label=f"{control}: train")  # fmt: skip
        left.plot(epochs, [h["val_accuracy"] for h in history], color=color,
                  label=f"{control}: validation")  # fmt: skip
    left.set(xlabel="epoch", ylabel="accuracy", title="5% of the data: train vs validation")
    left.legend(fontsize=8)
    for control in controls:
        if control == FULL:
            continue
        history = seed0[control]
        right.plot([h["epoch"] for h in history], [h["val_loss"] for h in history], label=control)
    right.set(xlabel="epoch", ylabel="validation loss", title="validation loss per control")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits", choices=["digits", "text", "mnist"])
    parser.add_argument("--attention", default="multihead")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--full-steps", type=int, default=600, help="step budget on 100%")
    parser.add_argument("--fast", action="store_true", help="1 seed, 5 epochs")
    args = parser.parse_args()
    if args.fast:
        args.seeds, args.epochs, args.full_steps = 1, 5, 20
    torch.set_num_threads(1)
    controls = [*CONTROLS, FULL]
    runs = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        for control in controls:
            fraction = 1.0 if control == FULL else args.fraction
            run = run_one(args.task, args.attention, fraction, seed, control, args)
            runs.append(run)
            print(
                f"seed {seed} {control:<30} train {run['train_accuracy']:.3f} "
                f"test {run['test_accuracy']:.3f} gap {run['gap']:+.3f} ({run['seconds']:.1f} s)",
                flush=True,
            )
    summary, table = summarize(runs, controls)
    title = (
        f"# Overfitting on {100 * args.fraction:g}% of {args.task} ({args.attention} attention), "
        f"{args.seeds} seeds, {args.epochs} epochs\n\n"
    )
    note = (
        "\n\nMeans ± standard deviation over seeds; accuracies in eval mode with the weights "
        "each run ends with. `gap closed`: share of the unregularized gap removed. `gap "
        "warning`: runs in which the trainer's train/validation gap detector warned (first "
        "epoch). Total time "
        f"{time.perf_counter() - started:.0f} s.\n"
    )
    plot(runs, controls, RESULTS / "overfitting.png")
    payload = {
        "machine": machine(),
        "settings": dict(vars(args)),
        "controls": {k: {"options": o, "train": t} for k, (o, t) in CONTROLS.items()},
        "summary": summary,
        "runs": runs,
    }
    write_results("overfitting", payload, title + table + note)
    print(title + table + note)


if __name__ == "__main__":
    main()
