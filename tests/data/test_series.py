"""Series loaders, sliding windows, chronological splits, and the errors for bad series files."""

import numpy as np
import pytest

from attnkit.data.series import (
    Scaler,
    Series,
    load_co2,
    load_series,
    load_series_file,
    load_sunspots,
    load_taylor,
    make_windows,
    split_series,
)


def test_co2_is_monthly_with_gaps_interpolated():
    series = load_co2()
    assert len(series) == 526 and series.period == 12
    assert np.isfinite(series.values).all()
    # March 1958 has one weekly reading (316.1); April 1958 four: 317.3, 317.6, 317.5, 316.4.
    assert series.values[0] == pytest.approx(316.1)
    assert series.values[1] == pytest.approx((317.3 + 317.6 + 317.5 + 316.4) / 4)
    # June 1958 has no reading: linear in time between May 1 and July 1 (31 of 61 days).
    may, july = series.values[2], series.values[4]
    assert series.values[3] == pytest.approx(may + (july - may) * 31 / 61)


def test_sunspots_and_taylor():
    sunspots = load_sunspots()
    assert len(sunspots) == 309 and sunspots.period == 11
    assert sunspots.values[:3].tolist() == [5.0, 11.0, 16.0]
    taylor = load_taylor()
    assert len(taylor) == 4032 and taylor.period == 48
    assert taylor.values[:2].tolist() == [22262.0, 21756.0]
    assert load_series("sunspots").values.tolist() == sunspots.values.tolist()
    with pytest.raises(ValueError, match="series name must be one of"):
        load_series("airline")


def test_make_windows_by_hand():
    past, future = make_windows(np.arange(6.0), window=3, horizon=2)
    assert past.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert future.tolist() == [[3, 4], [4, 5]]
    with pytest.raises(ValueError, match=r"shorter than window \+ horizon = 4 \+ 3 = 7"):
        make_windows(np.arange(6.0), window=4, horizon=3)


def _ramp(n: int = 100) -> Series:
    return Series("ramp", np.arange(n, dtype=np.float64) ** 1.5, period=1)


def test_splits_are_chronological_and_disjoint_in_their_targets():
    splits = split_series(_ramp(), window=5, horizon=3, val_fraction=0.2, test_fraction=0.2)
    val_start, test_start = splits.bounds
    assert (val_start, test_start) == (60, 80)
    inverse = splits.scaler.inverse
    train_targets = inverse(splits.train.future.double().numpy())
    val_targets = inverse(splits.val.future.double().numpy())
    test_targets = inverse(splits.test.future.double().numpy())
    times = np.arange(100) ** 1.5
    assert train_targets.max() == pytest.approx(times[val_start - 1], rel=1e-6)
    assert val_targets.min() == pytest.approx(times[val_start], rel=1e-6)
    assert val_targets.max() == pytest.approx(times[test_start - 1], rel=1e-6)
    assert test_targets.min() == pytest.approx(times[test_start], rel=1e-6)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (53, 18, 18)


def test_scaler_sees_training_values_only():
    series = _ramp()
    splits = split_series(series, window=5, horizon=3, val_fraction=0.2, test_fraction=0.2)
    train_part = series.values[:60]
    assert splits.scaler.mean == pytest.approx(train_part.mean())
    assert splits.scaler.std == pytest.approx(train_part.std())
    poisoned = series.values.copy()
    poisoned[60:] *= 1000.0  # validation and test values change wildly
    other = split_series(Series("p", poisoned, 1), 5, 3, val_fraction=0.2, test_fraction=0.2)
    assert other.scaler == splits.scaler
    assert np.array_equal(other.train.past.numpy(), splits.train.past.numpy())
    assert np.array_equal(other.train.future.numpy(), splits.train.future.numpy())


def test_fraction_keeps_the_most_recent_training_windows():
    full = split_series(_ramp(), 5, 3, val_fraction=0.2, test_fraction=0.2)
    part = split_series(_ramp(), 5, 3, val_fraction=0.2, test_fraction=0.2, fraction=0.25)
    assert len(part.train) == round(53 * 0.25)
    expected = full.scaler.inverse(full.train.future[-13:].double().numpy())
    assert np.allclose(part.scaler.inverse(part.train.future.double().numpy()), expected)
    covered = _ramp().values[40:60]  # the kept windows start at index 40
    assert part.scaler.mean == pytest.approx(covered.mean())
    assert len(part.val) == len(full.val) and len(part.test) == len(full.test)
    with pytest.raises(ValueError, match="fraction must be in"):
        split_series(_ramp(), 5, 3, fraction=0.0)


def test_split_too_short_names_the_part():
    with pytest.raises(ValueError, match="leaves no validation window"):
        split_series(_ramp(30), window=5, horizon=4, val_fraction=0.1, test_fraction=0.1)


def test_scaler_of_a_constant_series():
    scaler = Scaler.fit(np.full(5, 3.0))
    assert scaler == Scaler(3.0, 1.0)
    assert scaler.inverse(scaler.transform(np.array([4.0]))).tolist() == [4.0]


# ----------------------------------------------------------------------------- user files


def test_load_series_file_sorted_by_time(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_text("day,units,shop\n2024-01-03,3,a\n2024-01-01,1,a\n2024-01-02,2.5,b\n")
    series = load_series_file(path, column="units", time_column="day", period=7)
    assert series.values.tolist() == [1.0, 2.5, 3.0]
    assert series.period == 7 and series.name == "sales"
    assert load_series_file(path, column="units").values.tolist() == [3.0, 1.0, 2.5]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="series file not found"):
        load_series_file(tmp_path / "nope.csv", column="y")


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_series_file(empty, column="y")
    header = tmp_path / "header.csv"
    header.write_text("t,y\n")
    with pytest.raises(ValueError, match="has a header but no rows"):
        load_series_file(header, column="y")


def test_missing_column_lists_the_columns(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("time,value\n1,2\n")
    with pytest.raises(ValueError, match=r"column 'y' not in .*columns found: \['time', 'value'\]"):
        load_series_file(path, column="y")
    with pytest.raises(ValueError, match="column 'when' not in"):
        load_series_file(path, column="value", time_column="when")


def test_non_numeric_value_names_the_row(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("y\n1\n2\nabc\n4\n")
    with pytest.raises(ValueError, match=r"must be numeric; line 4 holds 'abc'"):
        load_series_file(path, column="y")


def test_nan_names_the_first_row(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("t,y\n0,1\n1,2\n2,3\n3,\n4,nan\n")
    with pytest.raises(ValueError, match=r"2 NaN value\(s\), the first at line 5"):
        load_series_file(path, column="y")


def test_bad_time_column(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("t,y\n2024-01-01,1\nsoon,2\n")
    with pytest.raises(ValueError, match=r"line 3 \('soon'\) is neither a number nor a date"):
        load_series_file(path, column="y", time_column="t")


def test_series_shorter_than_window_and_horizon(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("y\n" + "\n".join(str(i) for i in range(10)) + "\n")
    series = load_series_file(path, column="y")
    with pytest.raises(ValueError, match="series of length 10 is shorter than window"):
        split_series(series, window=8, horizon=4)


def test_error_lines_are_file_lines_after_sorting(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("t,y\n3,1\n1,x\n2,2\n")  # line 3 holds 'x', sorted first by time
    with pytest.raises(ValueError, match=r"line 3 holds 'x'"):
        load_series_file(path, column="y", time_column="t")
    path.write_text("t,y\n1,1\n2,inf\n")
    with pytest.raises(ValueError, match="infinite value at line 3"):
        load_series_file(path, column="y")
