"""Demo steps that train attention models and their no-attention baselines with one Trainer.

- ``text``: the evidence task (one word decides the class): BiGRU + additive (soft) attention
  pooling, BiGRU + hard attention pooling, a transformer (self-attention) + attention pooling,
  and BiGRU + mean pooling, the baseline.
- ``vision``: scikit-learn's 8x8 digits: a ViT (multi-head self-attention), the same network with
  mean mixing instead of attention, hard top-8 patch selection, and a parameter-matched CNN.
- ``series``: Mauna Loa CO2: lag attention forecasters (soft, multi-head), the same model without
  attention (widths matched to the parameter count), seasonal naive and linear AR.

Every model of a step gets the same step budget, batch size and learning rate (the recipes of
:mod:`attnkit.tasks`, a much smaller version of ``benchmarks/benefit_*.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnkit.demo.result import StepContext, StepResult, Table

__all__ = ["series_step", "text_step", "vision_step"]


@dataclass
class _Run:
    """One trained model: its label, test metrics, size, history and the model itself."""

    label: str
    test: dict[str, float]
    params: int
    steps: int
    seconds: float
    history: list[dict[str, Any]]
    model: nn.Module
    recipe: Any


def _train(
    recipe,
    label: str,
    *,
    steps: int,
    lr: float,
    seed: int,
    patience: int | None,
    tick: Callable[[], None],
) -> _Run:
    """Train ``recipe`` for at most ``steps`` optimizer steps, calling ``tick`` after each."""
    from attnkit.train import TrainConfig, Trainer, count_parameters

    config = TrainConfig(
        epochs=100_000,
        batch_size=64,
        lr=lr,
        seed=seed,
        patience=patience,
        max_steps=steps,
        progress=False,
        train_metrics=False,
        device="cpu",  # the demo's figures are CPU figures, on any machine
    )
    started = time.perf_counter()
    trainer = Trainer(
        recipe.model, config, loss=recipe.loss, metrics=recipe.metrics, on_step=lambda *_: tick()
    )
    result = trainer.fit(recipe.train, recipe.val, recipe.test)
    recipe.model.eval()
    return _Run(
        label,
        result.test or {},
        count_parameters(recipe.model),
        result.steps,
        time.perf_counter() - started,
        result.history,
        recipe.model,
        recipe,
    )


def _ticker(context: StepContext, total: int) -> Callable[[], None]:
    done = [0]
    context.progress(0, total)

    def tick() -> None:
        done[0] += 1
        context.progress(min(done[0], total), total)

    return tick


def _curves(runs: list[_Run], metric: str, ylabel: str, path, title: str) -> None:
    """Validation ``metric`` against optimizer steps, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.4))
    for run in runs:
        steps = [r["step"] for r in run.history]
        axis.plot(steps, [r[f"val_{metric}"] for r in run.history], marker=".", label=run.label)
    axis.set(xlabel="optimizer step", ylabel=ylabel, title=title)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _headline(
    metric: str,
    labels: dict[str, str],
    values: dict[str, float],
    baselines: str | tuple[str, ...],
    *,
    higher: bool,
) -> str:
    """``"test accuracy: soft 92.0%, ..., mean pooling 54.0% (a baseline wins)"``."""
    baselines = (baselines,) if isinstance(baselines, str) else baselines
    percent = higher  # accuracies are shown as percentages, errors as numbers

    def shown(value: float) -> str:
        return f"{value:.1%}" if percent else f"{value:.3f}"

    cells = ", ".join(f"{labels[key]} {shown(values[key])}" for key in labels)
    best = (max if higher else min)(labels, key=lambda key: values[key])
    twin = baselines[0]  # the same model without attention
    sign = 1 if higher else -1
    behind = [k for k in labels if k not in baselines and sign * (values[k] - values[twin]) < 0]
    tail = [f"best: {labels[best]}, a baseline"] if best in baselines else []
    if behind:
        tail.append(f"{', '.join(labels[k] for k in behind)} behind {labels[twin]}")
    return f"{metric}: {cells}" + (f" ({'; '.join(tail)})" if tail else "")


def _points(value: float, other: float) -> str:
    return f"{100 * abs(value - other):.1f} points"


# ---------------------------------------------------------------------------------- text

TEXT_VARIANTS = {
    "soft": "BiGRU + soft (additive) attention pooling",
    "hard": "BiGRU + hard attention pooling (Gumbel, k=1)",
    "multihead": "transformer self-attention (1 block, 2 heads) + attention pooling",
    "none": "BiGRU + mean pooling (baseline, no attention)",
}


def text_step(context: StepContext) -> StepResult:
    """Attention pooling vs mean pooling on the evidence task; test accuracy and the pooling
    weight that falls on the evidence word."""
    from attnkit.tasks import load_recipe

    sizes, name = context.sizes, "text"
    folder = context.folder(name)
    tick = _ticker(context, len(TEXT_VARIANTS) * sizes.text_steps)
    task = {"n": sizes.text_examples, "length": sizes.text_length, "classes": sizes.text_classes}
    runs = []
    for attention, label in TEXT_VARIANTS.items():
        options = dict(task, hidden=32, embed_dim=32, attention_dim=32)
        if attention == "multihead":
            options.update(num_layers=1, num_heads=2)
        recipe = load_recipe("text", attention=attention, seed=context.seed, **options)
        runs.append(
            _train(
                recipe,
                label,
                steps=sizes.text_steps,
                lr=3e-3,
                seed=context.seed,
                patience=None,
                tick=tick,
            )
        )
    by_name = dict(zip(TEXT_VARIANTS, runs, strict=True))
    base = by_name["none"].test["accuracy"]
    notes = []
    for attention in ("soft", "hard", "multihead"):
        run = by_name[attention]
        accuracy = run.test["accuracy"]
        if accuracy > base:
            verdict = f"beats the mean-pooling baseline by {_points(accuracy, base)}"
        elif accuracy < base:
            verdict = f"**loses** to the mean-pooling baseline by {_points(accuracy, base)}"
        else:
            verdict = "ties with the mean-pooling baseline"
        notes.append(
            f"{run.label}: test accuracy {accuracy:.1%}, {verdict}; it puts "
            f"{run.test['evidence_weight']:.0%} of its pooling weight on the evidence word "
            f"(mean pooling: {1 / sizes.text_length:.0%})."
        )
    notes.append(
        f"All at the same budget of {sizes.text_steps} steps of 64. Given a few times more steps "
        "mean pooling catches up on this task (benchmarks/results/benefit_text.md: 98.8% at 3x "
        "its budget there); attention pooling finds the evidence sooner."
    )
    _curves(
        runs,
        "accuracy",
        "validation accuracy",
        folder / "curves.png",
        "evidence task: validation accuracy",
    )
    _text_weights(by_name, folder / "weights.png")
    rows = tuple(
        (
            run.label,
            f"{run.params:,}",
            f"{run.test['accuracy']:.1%}",
            f"{run.test['evidence_weight']:.1%}",
            f"{run.seconds:.1f}",
        )
        for run in runs
    )
    payload = {
        "task": task,
        "steps": sizes.text_steps,
        "models": {a: _payload(r) for a, r in by_name.items()},
    }
    files = (
        context.write_json(name, "results.json", payload),
        "text/curves.png",
        "text/weights.png",
    )
    return StepResult(
        name=name,
        title="Text: attention pooling vs mean pooling (evidence task)",
        headline=_headline(
            "test accuracy",
            {"soft": "soft", "multihead": "self-attention", "hard": "hard", "none": "mean pooling"},
            {a: r.test["accuracy"] for a, r in by_name.items()},
            "none",
            higher=True,
        ),
        figures={f"{a} accuracy": r.test["accuracy"] for a, r in by_name.items()}
        | {f"{a} evidence weight": r.test["evidence_weight"] for a, r in by_name.items()},
        notes=tuple(notes),
        table=Table(
            ("model", "parameters", "test accuracy", "weight on evidence", "train s"),
            rows,
            timing=("train s",),
        ),
        files=files,
    )


def _payload(run: _Run) -> dict[str, Any]:
    return {
        "label": run.label,
        "test": run.test,
        "parameters": run.params,
        "steps": run.steps,
        "history": run.history,
    }


@torch.no_grad()
def _text_weights(by_name: dict[str, _Run], path) -> None:
    """Each model's pooling weights over the tokens of the first test example."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = by_name["soft"].recipe.test
    item = test[0]
    tokens, mask = item["tokens"][None], item["mask"][None]
    evidence = item["evidence"].nonzero().flatten().tolist()
    length = int(mask.sum())
    figure, axes = plt.subplots(len(by_name), 1, figsize=(7, 1.1 * len(by_name) + 0.6), sharex=True)
    for axis, run in zip(axes, by_name.values(), strict=True):
        weights = run.model(tokens, mask).weights[0, :length].numpy()
        colors = ["#ea580c" if i in evidence else "#64748b" for i in range(length)]
        axis.bar(range(length), weights, color=colors, width=0.9)
        axis.set_ylim(0, 1)
        axis.set_title(run.label, fontsize=7, loc="left")
        axis.tick_params(labelsize=6)
    axes[-1].set_xlabel("token position (orange: the evidence word)", fontsize=7)
    figure.suptitle("pooling weights on one test example", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------------------- vision

VISION_VARIANTS = {
    "vit": ("multihead", {}, "ViT (multi-head self-attention)"),
    "mean": ("none", {}, "ViT with mean mixing (no attention)"),
    "hard": ("hard", {}, "ViT on hard top-8 of 16 patches"),
    "cnn": ("none", {"model": "cnn"}, "CNN (no attention)"),
}


def vision_step(context: StepContext) -> StepResult:
    """ViT vs its mean-mixing ablation, hard patch selection and a CNN on sklearn digits."""
    from attnkit.tasks import load_recipe

    sizes, name = context.sizes, "vision"
    folder = context.folder(name)
    tick = _ticker(context, len(VISION_VARIANTS) * sizes.vision_steps)
    runs = {}
    for key, (attention, options, label) in VISION_VARIANTS.items():
        recipe = load_recipe("digits", attention=attention, seed=context.seed, **options)
        runs[key] = _train(
            recipe,
            label,
            steps=sizes.vision_steps,
            lr=2e-3,
            seed=context.seed,
            patience=None,
            tick=tick,
        )
    accuracy = {key: run.test["accuracy"] for key, run in runs.items()}
    notes = []
    for key in ("mean", "cnn"):
        gap = accuracy["vit"] - accuracy[key]
        word = "beats" if gap > 0 else ("**loses** to" if gap < 0 else "ties with")
        notes.append(
            f"The ViT ({accuracy['vit']:.1%}) {word} the {runs[key].label} "
            f"({accuracy[key]:.1%}) by {_points(accuracy['vit'], accuracy[key])}."
        )
    notes.append(
        f"Hard top-8 patch selection reaches {accuracy['hard']:.1%}. On 1,797 small images a "
        "convolution's locality is the better prior; attention's gain is over mixing without "
        "it (benchmarks/results/benefit_vision.md: the same order over 3 seeds)."
    )
    _curves(
        list(runs.values()),
        "accuracy",
        "validation accuracy",
        folder / "curves.png",
        "sklearn digits: validation accuracy",
    )
    _vit_attention(runs["vit"], folder / "attention.png")
    rows = tuple(
        (run.label, f"{run.params:,}", f"{run.test['accuracy']:.1%}", f"{run.seconds:.1f}")
        for run in runs.values()
    )
    payload = {"steps": sizes.vision_steps, "models": {k: _payload(r) for k, r in runs.items()}}
    files = (
        context.write_json(name, "results.json", payload),
        "vision/curves.png",
        "vision/attention.png",
    )
    return StepResult(
        name=name,
        title="Images: ViT vs no-attention baselines (sklearn digits, 8x8)",
        headline=_headline(
            "test accuracy",
            {"vit": "ViT", "hard": "hard top-8", "mean": "mean mixing", "cnn": "CNN"},
            accuracy,
            ("mean", "cnn"),
            higher=True,
        ),
        figures={f"{key} accuracy": value for key, value in accuracy.items()},
        notes=tuple(notes),
        table=Table(("model", "parameters", "test accuracy", "train s"), rows, timing=("train s",)),
        files=files,
    )


@torch.no_grad()
def _vit_attention(run: _Run, path) -> None:
    """Test digits and where the ViT's class token attends in its last block (mean of heads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels = run.recipe.test[:6]
    out = run.model(images, need_weights=True)
    side = run.model.config.image_size // run.model.config.patch_size
    maps = out.weights[-1][:, :, 0, 1:].mean(1).reshape(-1, side, side)  # (B, 4, 4)
    predicted = out.logits.argmax(-1)
    figure, axes = plt.subplots(2, len(images), figsize=(1.3 * len(images), 2.9))
    for i in range(len(images)):
        axes[0, i].imshow(images[i, 0].numpy(), cmap="gray_r")
        axes[0, i].set_title(f"{int(labels[i])} → {int(predicted[i])}", fontsize=7)
        axes[1, i].imshow(maps[i].numpy(), cmap="viridis")
        for axis in axes[:, i]:
            axis.set_axis_off()
    figure.suptitle(
        "digit (true → predicted), and the class token's attention over patches", fontsize=7
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------------------- series

SERIES_VARIANTS = {
    "soft": "lag attention (soft)",
    "multihead": "lag attention (multi-head, 4 heads)",
    "none": "same model, no attention",
}


def series_step(context: StepContext) -> StepResult:
    """Forecast a year of CO2 from three: lag attention vs no attention vs classical baselines."""
    from attnkit.data.series import load_series, split_series
    from attnkit.models.timeseries import AttentionForecaster, ForecasterConfig, plot_forecast
    from attnkit.tasks.series import (
        SERIES_SETTINGS,
        classical_baselines,
        matched_hidden,
        series_recipe,
    )
    from attnkit.train import count_parameters

    sizes, name = context.sizes, "series"
    folder = context.folder(name)
    tick = _ticker(context, len(SERIES_VARIANTS) * sizes.series_steps)
    target = count_parameters(
        AttentionForecaster(ForecasterConfig(**SERIES_SETTINGS["co2"], hidden=32))
    )
    runs = {}
    for attention, label in SERIES_VARIANTS.items():
        hidden = (
            32 if attention == "soft" else matched_hidden("co2", attention, target, range(8, 65))
        )
        recipe = series_recipe("co2", attention=attention, seed=context.seed, hidden=hidden)
        runs[attention] = _train(
            recipe,
            label,
            steps=sizes.series_steps,
            lr=3e-3,
            seed=context.seed,
            patience=15,
            tick=tick,
        )
    # classical baselines on the same windows (quantiles from their training residuals)
    config = runs["none"].recipe.config
    splits = split_series(load_series("co2"), config.window, config.horizon)  # the recipes' own
    test = splits.test
    scores = {label: run.test for label, run in ((r.label, r) for r in runs.values())}
    labels = {
        "seasonal naive": "seasonal naive (last year again)",
        "linear AR": "linear autoregression",
    }
    for model, values in classical_baselines(splits, config.quantiles).items():
        scores[labels[model]] = {"mae": values["mae"], "pinball": values["pinball"]}
    best = min(scores, key=lambda label: scores[label]["mae"])
    plain = runs["none"].test["mae"]
    notes = [f"Lowest test MAE: {best} ({scores[best]['mae']:.3f} ppm)."]
    for attention in ("soft", "multihead"):
        mae = runs[attention].test["mae"]
        change = mae / plain - 1
        word = "better" if change < 0 else "**worse**"
        notes.append(
            f"{runs[attention].label}: MAE {mae:.3f} ppm, {abs(change):.0%} {word} than the same "
            f"model without attention ({plain:.3f})."
        )
    notes.append(
        "On this smooth seasonal series attention is no clear win: over 3 seeds the differences "
        "stay within one seed's spread and seasonal naive is as good "
        "(benchmarks/results/benefit_series.md)."
    )
    _curves(
        list(runs.values()),
        "mae",
        "validation MAE (ppm)",
        folder / "curves.png",
        "co2: validation MAE",
    )
    last = len(test) - 1
    figure = plot_forecast(
        runs["multihead"].model,
        test.past[last],
        test.future[last],
        splits.scaler,
        title="co2: multi-head lag attention, last test window",
    )
    figure.savefig(folder / "forecast.png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)
    rows = tuple(
        (label, f"{values['mae']:.3f}", f"{values['pinball']:.3f}")
        for label, values in scores.items()
    )
    payload = {
        "steps": sizes.series_steps,
        "models": {a: _payload(r) for a, r in runs.items()},
        "test": scores,
    }
    files = (
        context.write_json(name, "results.json", payload),
        "series/forecast.png",
        "series/curves.png",
    )
    return StepResult(
        name=name,
        title="Time series: lag attention vs no attention vs classical baselines (Mauna Loa CO2)",
        headline=_headline(
            "test MAE (ppm)",
            {
                "soft": "soft",
                "multihead": "multi-head",
                "none": "no attention",
                "naive": "seasonal naive",
                "ar": "linear AR",
            },
            {a: r.test["mae"] for a, r in runs.items()}
            | {
                "naive": scores["seasonal naive (last year again)"]["mae"],
                "ar": scores["linear autoregression"]["mae"],
            },
            ("none", "naive", "ar"),
            higher=False,
        ),
        figures={f"{a} mae": r.test["mae"] for a, r in runs.items()}
        | {"seasonal naive mae": scores["seasonal naive (last year again)"]["mae"]},
        notes=tuple(notes),
        table=Table(("model", "test MAE (ppm)", "test pinball (ppm)"), rows),
        files=files,
    )
