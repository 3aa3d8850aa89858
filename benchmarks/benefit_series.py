"""Does attention over lags help forecasting? Attention forecaster vs the same model without it.

On three real series (statsmodels ``co2`` and ``sunspots``, pmdarima ``taylor``), four forecasters
see the same chronological windows:

- ``attention``: :class:`AttentionForecaster` with soft attention over the encoded lags;
- ``no attention``: the same model without the attention context, its width raised until it has
  about as many parameters; both get the same step budget, batch size, learning rate and early
  stopping on the validation split (best weights restored), over 3 seeds;
- ``seasonal naive`` and ``linear AR`` (least squares on the training windows), whose quantiles
  are their point forecast plus the empirical quantiles of their training residuals.

Reported on the test split in the series' own units: MAE of the median and the mean pinball loss
over the 0.1/0.5/0.9 quantiles (mean ± std over seeds; the baselines are deterministic).
Writes ``results/benefit_series.{md,json}`` and ``results/benefit_series.png``.

    flock /tmp/attnkit-heavy.lock .venv/bin/python benchmarks/benefit_series.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.data.series import load_series, split_series
from attnkit.models.timeseries import (
    AttentionForecaster,
    ForecasterConfig,
    interpret_output,
    plot_forecast,
)
from attnkit.tasks.series import (
    SERIES_SETTINGS,
    classical_baselines,
    matched_hidden,
    series_recipe,
)
from attnkit.train import TrainConfig, Trainer, count_parameters
from harness import RESULTS, machine, markdown_table, write_results

SEEDS = (0, 1, 2)
VARIANTS = {
    "soft": "attention (soft)",
    "multihead": "attention (multihead, 4 heads)",
    "none": "no attention",
}
HIDDEN = 32  # width of the attention model
QUANTILES = ForecasterConfig().quantiles
# Step budget and early-stopping patience (epochs) per series; the same for both neural models.
BUDGET = {
    "co2": {"max_steps": 600, "patience": 15},
    "sunspots": {"max_steps": 600, "patience": 20},
    "taylor": {"max_steps": 800, "patience": 5},
}


def baselines(name: str) -> dict[str, dict[str, float]]:
    """Seasonal naive and linear AR on the test windows (:func:`classical_baselines`)."""
    settings = SERIES_SETTINGS[name]
    splits = split_series(load_series(name), settings["window"], settings["horizon"])
    return classical_baselines(splits, QUANTILES)


def neural(name: str, attention: str, hidden: int, seed: int, quick: bool) -> dict[str, object]:
    """Train one forecaster with the trainer; its test metrics, size, steps and time."""
    recipe = series_recipe(name, attention=attention, seed=seed, hidden=hidden)
    budget = BUDGET[name]
    config = TrainConfig(
        epochs=10_000,
        batch_size=64,
        lr=3e-3,
        seed=seed,
        patience=budget["patience"],
        max_steps=60 if quick else budget["max_steps"],
        progress=False,
        train_metrics=False,
    )
    result = Trainer(recipe.model, config, loss=recipe.loss, metrics=recipe.metrics).fit(
        recipe.train, recipe.val, recipe.test
    )
    record: dict[str, object] = {
        "seed": seed,
        "params": count_parameters(recipe.model),
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "mae": result.test["mae"],
        "pinball": result.test["pinball"],
    }
    if attention != "none":
        record["peak_distance"] = interpret_output(recipe.model, recipe.test.past).peak_distance
    record["model"] = recipe.model
    return record


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (a single value alone), 3 decimals below 10, else 1."""
    mean = statistics.fmean(values)
    digits = 3 if mean < 10 else 1
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def verdict(runs: dict[str, list[dict[str, object]]], base: dict[str, dict[str, float]]) -> str:
    """One sentence per metric: the best model, and attention against no attention."""
    lines = []
    for metric in ("mae", "pinball"):
        means = {VARIANTS[a]: statistics.fmean(r[metric] for r in rs) for a, rs in runs.items()}
        means.update({m: v[metric] for m, v in base.items()})
        best = min(means, key=means.get)
        plain = [r[metric] for r in runs["none"]]
        parts = []
        for attention in ("soft", "multihead"):
            values = [r[metric] for r in runs[attention]]
            change = statistics.fmean(values) / statistics.fmean(plain) - 1
            spread = (
                max(statistics.stdev(values), statistics.stdev(plain)) if len(values) > 1 else 0
            )
            clear = abs(statistics.fmean(values) - statistics.fmean(plain)) > spread
            parts.append(
                f"{attention} attention {change:+.0%} vs no attention "
                f"({'more' if clear else 'less'} than one seed std)"
            )
        lines.append(f"- {metric}: best is {best}; " + "; ".join(parts) + ".")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 steps, one seed: a smoke run")
    parser.add_argument("--series", nargs="*", default=list(SERIES_SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = SEEDS[:1] if args.quick else SEEDS

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(
        2 * len(args.series),
        1,
        figsize=(9, 4.2 * len(args.series)),
        gridspec_kw={"height_ratios": [3, 1] * len(args.series)},
    )
    payload: dict[str, object] = {"machine": machine(), "seeds": list(seeds), "series": {}}
    sections = []
    for row, name in enumerate(args.series):
        started = time.perf_counter()
        attention_size = count_parameters(
            AttentionForecaster(ForecasterConfig(**SERIES_SETTINGS[name], hidden=HIDDEN))
        )
        widths = {a: matched_hidden(name, a, attention_size) for a in VARIANTS}
        runs = {
            attention: [neural(name, attention, hidden, s, args.quick) for s in seeds]
            for attention, hidden in widths.items()
        }
        base = baselines(name)
        splits = split_series(
            load_series(name), SERIES_SETTINGS[name]["window"], SERIES_SETTINGS[name]["horizon"]
        )
        model = runs["soft"][0]["model"]
        index = min(len(splits.test) - 1, splits.series.period)
        plot_forecast(
            model,
            splits.test.past[index],
            splits.test.future[index],
            splits.scaler,
            title=f"{name}: test window {index}, soft attention (seed {seeds[0]})",
            axes=(grid[2 * row], grid[2 * row + 1]),
        )
        for records in runs.values():
            for record in records:
                del record["model"]
        rows = []
        for attention, records in runs.items():
            peaks = [r["peak_distance"] for r in records if "peak_distance" in r]
            rows.append(
                [
                    VARIANTS[attention],
                    records[0]["params"],
                    round(statistics.fmean(r["steps"] for r in records)),
                    mean_std([r["mae"] for r in records]),
                    mean_std([r["pinball"] for r in records]),
                    f"{statistics.fmean(r['seconds'] for r in records):.1f}",
                    ", ".join(map(str, peaks)) if peaks else "-",
                ]
            )
        for model_name, values in base.items():
            mae = f"{mean_std([values['mae']])} (bare point: {mean_std([values['mae_point']])})"
            rows.append([model_name, "-", "-", mae, mean_std([values["pinball"]]), "-", "-"])
        settings = SERIES_SETTINGS[name]
        header = (
            f"### {name}: window {settings['window']} -> horizon {settings['horizon']}, "
            f"period {splits.series.period}; {len(splits.train)}/{len(splits.val)}/"
            f"{len(splits.test)} train/val/test windows; step budget {BUDGET[name]['max_steps']}"
        )
        table = markdown_table(
            [
                "model",
                "params",
                "steps",
                "test MAE",
                "test pinball",
                "s/run",
                "attention peak (steps before target)",
            ],
            rows,
        )
        sections.append(header + "\n\n" + table + "\n\n" + verdict(runs, base))
        payload["series"][name] = {
            "settings": settings,
            "budget": BUDGET[name],
            "period": splits.series.period,
            "windows": {
                "train": len(splits.train),
                "val": len(splits.val),
                "test": len(splits.test),
            },
            "neural": runs,
            "baselines": base,
            "seconds": time.perf_counter() - started,
        }
        print(sections[-1], f"\n({time.perf_counter() - started:.0f} s)\n", flush=True)
    fig.tight_layout()
    if not args.quick:
        fig.savefig(RESULTS / "benefit_series.png", dpi=90)
        description = machine()
        intro = (
            "## Attention over lags vs no attention, seasonal naive and linear AR "
            f"(test split, mean ± std over {len(seeds)} seeds)\n\n"
            f"Machine: {description['cpu']}, {description['cores']} cores, torch "
            f"{description['torch']}, {description['threads']} thread(s). MAE and pinball loss in "
            "the series' units; lower is better.\n\n"
            "Neural models: GRU encoder, lag attention from each horizon step, 0.1/0.5/0.9 "
            "quantiles, pinball loss; widths chosen so that all three variants have about the "
            "same number of parameters; the same step budget, batch 64, AdamW lr 3e-3, early "
            "stopping on the validation split with the best weights restored (so `steps` can be "
            "below the budget). Baselines: their quantiles are the point forecast plus the "
            "empirical quantiles of their training residuals; their MAE is of that median "
            "(the bare point forecast's MAE in brackets). Attention peak: the distance (steps "
            "before the forecast target) with the most attention on the test windows, per seed "
            "(`interpret_output(...).peak_distance`). taylor's windows (96 half hours) are "
            "shorter than a week, so its seasonal naive uses the daily period 48.\n"
        )
        write_results("benefit_series", payload, intro + "\n" + "\n\n".join(sections))


if __name__ == "__main__":
    main()
