"""The forecasting tasks (Mauna Loa CO2, sunspots, Taylor's electricity demand, a user's CSV) for
an :class:`~attnkit.models.timeseries.AttentionForecaster` or its no-attention twin, and the
scores of the classical baselines (seasonal naive, linear AR) on a task's test split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.models.timeseries import (
    ATTENTIONS,
    AttentionForecaster,
    ForecasterConfig,
    LinearAR,
    pinball_loss,
    residual_quantiles,
    seasonal_naive,
)
from attnkit.tasks.recipe import Recipe
from attnkit.train.parameters import count_parameters

__all__ = [
    "SERIES_SETTINGS",
    "classical_baselines",
    "co2_recipe",
    "matched_hidden",
    "series_recipe",
    "sunspots_recipe",
    "taylor_recipe",
]


def classical_baselines(splits, quantiles: Sequence[float]) -> dict[str, dict[str, float]]:
    """Seasonal naive and linear AR on ``splits.test``, in the series' units.

    Their quantiles are the point forecast plus the empirical quantiles of their training
    residuals (:func:`residual_quantiles`). ``mae`` is of the median of that band (as for the
    neural models; ``quantiles`` must hold 0.5), ``mae_point`` of the bare point forecast.

    Args:
        splits: a :class:`~attnkit.data.series.SeriesSplits`.
    """
    train, test, scale = splits.train, splits.test, splits.scaler.std
    horizon, period = test.future.shape[-1], splits.series.period
    ar = LinearAR.fit(train.past, train.future)
    points = {
        "seasonal naive": (
            seasonal_naive(train.past, horizon, period),
            seasonal_naive(test.past, horizon, period),
        ),
        "linear AR": (ar.predict(train.past), ar.predict(test.past)),
    }
    middle = list(quantiles).index(0.5)
    out = {}
    for model, (fitted, point) in points.items():
        band = residual_quantiles(point, train.future - fitted, quantiles)
        out[model] = {
            "mae": float((band[..., middle] - test.future).abs().mean()) * scale,
            "pinball": float(pinball_loss(band, test.future, quantiles)) * scale,
            "mae_point": float((point - test.future).abs().mean()) * scale,
        }
    return out


def matched_hidden(
    name: str, attention: str, target: int, widths: Sequence[int] = range(8, 129)
) -> int:
    """Width (of ``widths``) of the ``attention`` forecaster for series ``name`` whose parameter
    count is nearest ``target``; multi-head widths are multiples of 4 (its heads divide them)."""

    def count(hidden: int) -> int:
        config = ForecasterConfig(**SERIES_SETTINGS[name], hidden=hidden, attention=attention)
        return count_parameters(AttentionForecaster(config))

    usable = [h for h in widths if attention != "multihead" or h % 4 == 0]
    return min(usable, key=lambda h: abs(count(h) - target))


SERIES_SETTINGS: dict[str, dict[str, int]] = {
    "co2": {"window": 36, "horizon": 12},  # three years of months -> the next year
    "sunspots": {"window": 33, "horizon": 11},  # three solar cycles -> the next cycle
    "taylor": {"window": 96, "horizon": 48},  # two days of half hours -> the next day
}
_SPLIT_OPTIONS = ("val_fraction", "test_fraction")
_FILE_OPTIONS = ("column", "time_column", "period")


def series_recipe(
    name: str,
    attention: str = "soft",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """A forecasting task ready for :class:`attnkit.train.Trainer`.

    Args:
        name: a bundled series (``"co2"``, ``"sunspots"``, ``"taylor"``), or the task's name for
            a user file given as ``data``.
        attention: ``"soft"``, ``"hard"``, ``"multihead"`` or ``"none"``.
        seed: seeds the model's initialisation.
        fraction: share of the training windows kept (the most recent ones).
        data: a CSV file; then ``column`` is required, ``time_column`` and ``period`` optional.
        options: :class:`~attnkit.models.timeseries.ForecasterConfig` fields (``window``,
            ``horizon``, ``hidden``, ``dropout``, ``head_dropout``, ...), ``val_fraction`` and
            ``test_fraction``.

    A batch is ``(past (B, L), future (B, Hz))`` in scaled units; the loss is the pinball loss
    and the metrics ``mae`` (of the median) and ``pinball`` are in the series' own units.
    """
    from attnkit.data.series import load_series, load_series_file, split_series

    known = {f.name for f in fields(ForecasterConfig)} - {"attention"}
    known |= set(_SPLIT_OPTIONS) | (set(_FILE_OPTIONS) if data is not None else set())
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for series tasks; supported: {sorted(known)}"
        )
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if data is not None:
        if "column" not in options:
            raise ValueError("a series file needs options column=<name of the value column>")
        file_args = {k: options.pop(k) for k in _FILE_OPTIONS if k in options}
        series = load_series_file(data, **file_args)
        settings = {"window": 2 * series.period if series.period > 1 else 24, "horizon": 1}
    else:
        series = load_series(name)
        settings = dict(SERIES_SETTINGS[name])
    split_args = {k: options.pop(k) for k in _SPLIT_OPTIONS if k in options}
    settings.update(options)
    if "quantiles" in settings:  # a list from the command line or JSON
        settings["quantiles"] = tuple(settings["quantiles"])
    config = ForecasterConfig(attention=attention, **settings)
    splits = split_series(series, config.window, config.horizon, fraction=fraction, **split_args)
    torch.manual_seed(seed)
    model = AttentionForecaster(config)
    scale = splits.scaler.std

    def loss(model: nn.Module, batch: Any) -> Tensor:
        past, future = batch
        return pinball_loss(model(past).quantiles, future, config.quantiles)

    @torch.no_grad()
    def metrics(model: nn.Module, batch: Any) -> dict[str, float]:
        past, future = batch
        result = model(past)
        mae = (result.median(config.quantiles) - future).abs().mean()
        pinball = pinball_loss(result.quantiles, future, config.quantiles)
        return {"mae": float(mae) * scale, "pinball": float(pinball) * scale}

    return Recipe(name, model, splits.train, splits.val, splits.test, loss, metrics, config)


def co2_recipe(
    attention: str = "soft",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """Mauna Loa CO2, monthly: 36 months -> the next 12 (:func:`series_recipe`)."""
    return series_recipe("co2", attention, seed, fraction, data, **options)


def sunspots_recipe(
    attention: str = "soft",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """Yearly sunspots: 33 years -> the next 11 (:func:`series_recipe`)."""
    return series_recipe("sunspots", attention, seed, fraction, data, **options)


def taylor_recipe(
    attention: str = "soft",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """Half-hourly electricity demand: 96 half hours -> the next 48 (:func:`series_recipe`)."""
    return series_recipe("taylor", attention, seed, fraction, data, **options)
