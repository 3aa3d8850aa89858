"""Real time series and sliding-window forecasting datasets.

Bundled series (shipped inside installed packages, nothing is downloaded):

- ``co2``: weekly atmospheric CO2 at Mauna Loa, 1958-2001 (statsmodels). The weekly record has
  59 missing weeks; it is resampled to **monthly means** (526 months, seasonal period 12) and the
  months that still have no value are filled by linear interpolation in time.
- ``sunspots``: yearly sunspot numbers, 1700-2008 (statsmodels; 309 years, ~11-year cycle).
- ``taylor``: half-hourly electricity demand in England and Wales, 12 weeks of 2000
  (pmdarima; Taylor 2003; 4,032 points, daily period 48, weekly period 336).

A series becomes windows ``(past (window,), future (horizon,))``. Splits are chronological:
the series is cut at two points into train / validation / test parts, a window belongs to the
part that holds its whole future, and its past may reach back into the parts before (past values
are known at forecast time). The scaler is fitted on the values that the kept training windows
cover, never on validation or test values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "SERIES",
    "Scaler",
    "Series",
    "SeriesSplits",
    "WindowDataset",
    "load_co2",
    "load_series",
    "load_series_file",
    "load_sunspots",
    "load_taylor",
    "make_windows",
    "split_series",
]


@dataclass(frozen=True)
class Series:
    """A univariate series: ``values (T,)`` float64, its seasonal ``period`` and a description."""

    name: str
    values: np.ndarray
    period: int
    description: str = ""

    def __len__(self) -> int:
        return len(self.values)


def load_co2() -> Series:
    """Mauna Loa CO2 (ppm), weekly readings resampled to monthly means, gaps interpolated."""
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate(method="time")
    return Series(
        "co2",
        monthly.to_numpy(dtype=np.float64),
        period=12,
        description="Mauna Loa CO2 (ppm), monthly means of weekly data, gaps interpolated",
    )


def load_sunspots() -> Series:
    """Yearly mean sunspot numbers 1700-2008 (period ~11 years)."""
    from statsmodels.datasets import sunspots

    values = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)
    return Series("sunspots", values, period=11, description="Yearly sunspot numbers 1700-2008")


def load_taylor() -> Series:
    """Half-hourly electricity demand (MW), England and Wales, 12 weeks (daily period 48)."""
    from pmdarima.datasets import load_taylor as _load

    values = np.asarray(_load(), dtype=np.float64)
    return Series(
        "taylor",
        values,
        period=48,
        description="Half-hourly electricity demand (MW), England and Wales, June-August 2000",
    )


SERIES = {"co2": load_co2, "sunspots": load_sunspots, "taylor": load_taylor}


def load_series(name: str) -> Series:
    """A bundled series by name: one of :data:`SERIES`."""
    if name not in SERIES:
        raise ValueError(f"series name must be one of {sorted(SERIES)}, got {name!r}")
    return SERIES[name]()


def load_series_file(
    path: str | Path, column: str, time_column: str | None = None, period: int = 1
) -> Series:
    """A user's series from a CSV file with a header row.

    Args:
        path: the CSV file.
        column: the column holding the values; every row must be a finite number.
        time_column: optional column to sort the rows by (parsed as dates, or numbers).
        period: the seasonal period, for the seasonal-naive baseline (1 = plain naive).

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty file, missing column (the columns found are listed), non-numeric
            values or NaN (the file line of the first offending value is named; line 1 is
            the header).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"series file not found: {path}")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"series file {path} is empty") from None
    if frame.empty:
        raise ValueError(f"series file {path} has a header but no rows")
    for name in (column, time_column):
        if name is not None and name not in frame.columns:
            raise ValueError(f"column {name!r} not in {path}; columns found: {list(frame.columns)}")
    if time_column is not None:
        times = pd.to_numeric(frame[time_column], errors="coerce")
        if times.isna().any():
            times = pd.to_datetime(frame[time_column], errors="coerce")
        if times.isna().any():
            row = int(np.flatnonzero(times.isna().to_numpy())[0])
            raise ValueError(
                f"time column {time_column!r} in {path}: line {_line(frame, row)} "
                f"({frame[time_column].iloc[row]!r}) is neither a number nor a date"
            )
        frame = frame.iloc[np.argsort(times.to_numpy(), kind="stable")]
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values) & raw.notna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"column {column!r} in {path} must be numeric; line {_line(frame, row)} holds "
            f"{raw.iloc[row]!r}"
        )
    if np.isnan(values).any():
        row = int(np.flatnonzero(np.isnan(values))[0])
        raise ValueError(
            f"column {column!r} in {path} has {int(np.isnan(values).sum())} NaN value(s), the "
            f"first at line {_line(frame, row)}; fill or drop them first"
        )
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(
            f"column {column!r} in {path} has an infinite value at line {_line(frame, row)}"
        )
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    return Series(path.stem, values, period=period, description=f"{path.name}: {column}")


def _line(frame: object, position: int) -> int:
    """The file line (1 = header) of the row at ``position`` of a frame read by ``read_csv``."""
    return int(frame.index[position]) + 2


def make_windows(values: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Every sliding window of a series.

    Args:
        values: ``(T,)``.
        window: past length ``L``.
        horizon: future length ``Hz``.

    Returns:
        ``past (N, L)`` and ``future (N, Hz)`` with ``N = T - L - Hz + 1``; window ``i`` has past
        ``values[i : i + L]`` and future ``values[i + L : i + L + Hz]``.
    """
    if window < 1 or horizon < 1:
        raise ValueError(f"window and horizon must be >= 1, got {window} and {horizon}")
    if len(values) < window + horizon:
        raise ValueError(
            f"series of length {len(values)} is shorter than window + horizon = "
            f"{window} + {horizon} = {window + horizon}"
        )
    frames = np.lib.stride_tricks.sliding_window_view(values, window + horizon)
    return frames[:, :window].copy(), frames[:, window:].copy()


@dataclass(frozen=True)
class Scaler:
    """``(x - mean) / std``, fitted on training values only."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        """Mean and standard deviation of ``values`` (std 1 for a constant series)."""
        std = float(np.std(values))
        return cls(float(np.mean(values)), std if std > 0 else 1.0)

    def transform(self, x: np.ndarray | Tensor) -> np.ndarray | Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: np.ndarray | Tensor) -> np.ndarray | Tensor:
        return x * self.std + self.mean


class WindowDataset(Dataset):
    """Windows as float32 tensors: item ``i`` is ``(past (L,), future (Hz,))``, already scaled."""

    def __init__(self, past: np.ndarray, future: np.ndarray) -> None:
        self.past = torch.as_tensor(past, dtype=torch.float32)
        self.future = torch.as_tensor(future, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.past)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.past[index], self.future[index]


@dataclass(frozen=True)
class SeriesSplits:
    """Chronological train / validation / test windows of one series, scaled by ``scaler``.

    ``bounds`` are the series indices where the validation and the test parts begin.
    """

    series: Series
    train: WindowDataset
    val: WindowDataset
    test: WindowDataset
    scaler: Scaler
    window: int
    horizon: int
    bounds: tuple[int, int]


def split_series(
    series: Series,
    window: int,
    horizon: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    fraction: float = 1.0,
) -> SeriesSplits:
    """Cut a series in time into train / validation / test windows.

    The last ``test_fraction`` of the time steps are the test part and the ``val_fraction``
    before them the validation part; a window belongs to the part holding its whole future.
    ``fraction`` keeps that share of the training windows, the most recent ones (at least one).
    The scaler is fitted on the series values the kept training windows cover.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not (0.0 < val_fraction < 1.0 and 0.0 < test_fraction < 1.0):
        raise ValueError(
            f"val_fraction and test_fraction must be in (0, 1), got {val_fraction} and "
            f"{test_fraction}"
        )
    length = len(series.values)
    test_start = length - round(length * test_fraction)
    val_start = test_start - round(length * val_fraction)
    past, future = make_windows(series.values, window, horizon)
    first_target = np.arange(len(past)) + window  # series index of each window's first target
    last_target = first_target + horizon - 1
    in_train = last_target < val_start
    in_val = (first_target >= val_start) & (last_target < test_start)
    in_test = first_target >= test_start
    for name, mask in (("train", in_train), ("validation", in_val), ("test", in_test)):
        if not mask.any():
            raise ValueError(
                f"series {series.name!r} of length {length} leaves no {name} window for "
                f"window={window}, horizon={horizon} (validation starts at {val_start}, "
                f"test at {test_start})"
            )
    train_idx = np.flatnonzero(in_train)
    keep = max(1, round(len(train_idx) * fraction))
    train_idx = train_idx[len(train_idx) - keep :]
    covered = series.values[train_idx[0] : train_idx[-1] + window + horizon]
    scaler = Scaler.fit(covered)

    def part(index: np.ndarray) -> WindowDataset:
        return WindowDataset(scaler.transform(past[index]), scaler.transform(future[index]))

    return SeriesSplits(
        series,
        part(train_idx),
        part(np.flatnonzero(in_val)),
        part(np.flatnonzero(in_test)),
        scaler,
        window,
        horizon,
        (val_start, test_start),
    )
