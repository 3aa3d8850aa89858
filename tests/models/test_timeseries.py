"""The attention forecaster, the pinball loss, the baselines and the series recipes."""

import math

import numpy as np
import pytest
import torch

from attnkit.attention.multihead import MultiHeadAttention
from attnkit.data.series import make_windows
from attnkit.models.blocks import MeanMixing
from attnkit.models.timeseries import (
    AttentionForecaster,
    ForecasterConfig,
    LinearAR,
    interpret_output,
    pinball_loss,
    plot_forecast,
    residual_quantiles,
    seasonal_naive,
)
from attnkit.tasks import series_recipe

QUANTILES = (0.1, 0.5, 0.9)


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: a GRU step per OpenMP region only waits for threads on a busy
    machine (seen: 50x slower with 2 threads under load), so the tests use one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pinball_loss_by_hand():
    pred = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    # target 2: errors 1, 0, -1 -> 0.1*1, 0, (0.9-1)*(-1) = 0.1, 0, 0.1
    # target 5: errors 4, 3, 2 -> 0.4, 1.5, 1.8
    loss = pinball_loss(pred, torch.tensor([2.0, 5.0]), QUANTILES)
    assert float(loss) == pytest.approx((0.1 + 0 + 0.1 + 0.4 + 1.5 + 1.8) / 6)
    with pytest.raises(ValueError, match="pred must be target's shape"):
        pinball_loss(pred, torch.tensor([2.0, 5.0]), (0.5,))


def test_pinball_loss_is_half_the_mae_at_the_median():
    pred, target = torch.randn(8, 5, 1), torch.randn(8, 5)
    expected = 0.5 * (pred[..., 0] - target).abs().mean()
    assert float(pinball_loss(pred, target, (0.5,))) == pytest.approx(float(expected))


def test_seasonal_naive_by_hand():
    past = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    assert seasonal_naive(past, horizon=3, period=2).tolist() == [[4.0, 5.0, 4.0]]
    assert seasonal_naive(past, horizon=2, period=1).tolist() == [[5.0, 5.0]]
    with pytest.raises(ValueError, match=r"period must be in \[1, window=5\], got 6"):
        seasonal_naive(past, horizon=2, period=6)


def test_linear_ar_recovers_a_known_recursion():
    gen = torch.Generator().manual_seed(0)
    past = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    future = torch.stack([2 * past[:, -1] - past[:, 0] + 1, 0.5 * past[:, 1]], 1)  # (50, 2)
    ar = LinearAR.fit(past, future)
    expected = torch.tensor([[-1.0, 0.0], [0.0, 0.5], [0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(ar.weight, expected, atol=1e-10)
    assert torch.allclose(ar.bias, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-10)
    assert ar.predict(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))[0].tolist() == pytest.approx([8, 1])


def test_linear_ar_by_hand():
    # Three windows of one lag: y = x + 1 exactly; least squares gives weight 1, bias 1.
    ar = LinearAR.fit(torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([[1.0], [2.0], [3.0]]))
    assert float(ar.weight) == pytest.approx(1.0) and float(ar.bias) == pytest.approx(1.0)


def test_residual_quantiles_by_hand():
    residuals = torch.tensor([[-1.0], [0.0], [1.0], [2.0]])  # (M=4, Hz=1)
    band = residual_quantiles(torch.tensor([[10.0]]), residuals, (0.25, 0.5))
    # linear interpolation: q0.25 at position 0.75 -> -0.25; q0.5 at 1.5 -> 0.5
    assert band.tolist() == [[[9.75, 10.5]]]


@pytest.mark.parametrize(
    ("attention", "encoder"),
    [("soft", "gru"), ("hard", "gru"), ("multihead", "gru"), ("soft", "transformer")],
)
def test_attention_sums_to_one_over_lags(attention, encoder):
    config = ForecasterConfig(window=12, horizon=4, hidden=16, attention=attention, encoder=encoder)
    model = AttentionForecaster(config).eval()
    result = model(torch.randn(5, 12))
    heads = 4 if attention == "multihead" else 1
    assert result.quantiles.shape == (5, 4, 3)
    assert result.attention.shape == (5, heads, 4, 12)
    assert torch.allclose(result.attention.sum(-1), torch.ones(5, heads, 4), atol=1e-5)
    lags = interpret_output(model, torch.randn(5, 12))
    assert lags.by_position.shape == (12,) and lags.by_horizon.shape == (4, 12)
    assert lags.by_distance.shape == (15,)
    for total in (lags.by_position.sum(), lags.by_distance.sum()):
        assert float(total) == pytest.approx(1.0, abs=1e-5)


def test_no_attention_variant():
    model = AttentionForecaster(ForecasterConfig(window=12, horizon=4, attention="none"))
    assert model(torch.randn(2, 12)).attention is None
    with pytest.raises(ValueError, match="needs a model with attention"):
        interpret_output(model, torch.randn(2, 12))
    plain = AttentionForecaster(ForecasterConfig(attention="none", encoder="transformer"))
    assert not any(isinstance(m, MultiHeadAttention) for m in plain.modules())
    assert any(isinstance(m, MeanMixing) for m in plain.modules())


def test_by_distance_by_hand():
    """Distance d = L + h - j: with L=3, Hz=2, uniform weights give [1, 2, 2, 1] / 6."""
    model = AttentionForecaster(ForecasterConfig(window=3, horizon=2, hidden=8))
    with torch.no_grad():
        for p in model.attention.parameters():
            p.zero_()  # equal scores -> uniform weights
    lags = interpret_output(model, torch.randn(4, 3))
    assert lags.by_distance.tolist() == pytest.approx([1 / 6, 2 / 6, 2 / 6, 1 / 6], abs=1e-6)


def test_config_errors():
    with pytest.raises(ValueError, match="attention must be one of"):
        ForecasterConfig(attention="sparse")
    with pytest.raises(ValueError, match="quantiles must increase strictly"):
        ForecasterConfig(quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match=r"hidden \(30\) must be divisible by heads \(4\)"):
        ForecasterConfig(hidden=30, attention="multihead")
    with pytest.raises(ValueError, match="past must be"):
        AttentionForecaster(ForecasterConfig(window=12)).forward(torch.randn(2, 10))


def _sine_windows(window: int, horizon: int, n: int = 300, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32)
    values = torch.sin(2 * math.pi * t / 12) + 0.3 * torch.randn(n, generator=gen)
    past, future = make_windows(values.numpy(), window, horizon)
    return torch.from_numpy(past), torch.from_numpy(future)


def _train(model, past, future, steps, lr=1e-2, seed=0):
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        index = torch.randint(0, len(past), (32,))
        loss = pinball_loss(model(past[index]).quantiles, future[index], QUANTILES)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    ("attention", "encoder"), [("soft", "gru"), ("none", "gru"), ("none", "transformer")]
)
def test_loss_falls_on_a_tiny_slice(attention, encoder):
    past, future = _sine_windows(16, 4)
    past, future = past[:64], future[:64]
    torch.manual_seed(0)
    config = ForecasterConfig(window=16, horizon=4, attention=attention, encoder=encoder)
    model = AttentionForecaster(config)
    with torch.no_grad():
        before = float(pinball_loss(model(past).quantiles, future, QUANTILES))
    _train(model, past, future, steps=60)
    with torch.no_grad():
        after = float(pinball_loss(model(past).quantiles, future, QUANTILES))
    assert after < 0.5 * before


def test_quantiles_are_ordered_and_cover_after_training():
    past, future = _sine_windows(24, 3, n=600)
    torch.manual_seed(0)
    model = AttentionForecaster(ForecasterConfig(window=24, horizon=3, hidden=16))
    _train(model, past, future, steps=200)
    with torch.no_grad():
        q = model.eval()(past).quantiles  # (N, 3, 3)
    ordered = ((q[..., 0] <= q[..., 1]) & (q[..., 1] <= q[..., 2])).float().mean()
    assert float(ordered) > 0.98
    below = (future.unsqueeze(-1) <= q).float().mean((0, 1))  # empirical coverage per level
    assert below.tolist() == pytest.approx(list(QUANTILES), abs=0.08)


def test_attention_peaks_at_the_seasonal_lag():
    """A seasonal random walk y[t] = y[t-7] + noise: the best forecast copies lag 7."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(600, generator=gen)
    values = torch.zeros(600)
    values[:7] = noise[:7]
    for t in range(7, 600):
        values[t] = values[t - 7] + 0.3 * noise[t]
    past, future = (torch.from_numpy(a) for a in make_windows(values.numpy(), 10, 3))
    torch.manual_seed(0)
    model = AttentionForecaster(ForecasterConfig(window=10, horizon=3, hidden=16))
    losses = _train(model, past, future, steps=300)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    lags = interpret_output(model, past)
    assert lags.peak_distance == 7
    assert float(lags.by_distance[6]) > 0.5


def test_plot_forecast(tmp_path):
    pytest.importorskip("matplotlib")
    model = AttentionForecaster(ForecasterConfig(window=12, horizon=4, hidden=8))
    fig = plot_forecast(model, torch.randn(12), torch.randn(4), title="toy")
    assert len(fig.axes) == 2
    assert len(fig.axes[1].patches) == 12  # one attention bar per lag
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
    none = AttentionForecaster(ForecasterConfig(window=12, horizon=4, attention="none"))
    assert len(plot_forecast(none, torch.randn(12)).axes) == 1


# ----------------------------------------------------------------------------- recipes


def test_recipe_builds_and_its_metrics_are_in_series_units():
    recipe = series_recipe("sunspots", attention="none", seed=0, hidden=8)
    assert recipe.config.window == 33 and recipe.config.horizon == 11
    past, future = recipe.train[0]
    assert past.shape == (33,) and future.shape == (11,)
    batch = (recipe.val.past, recipe.val.future)
    with torch.no_grad():
        metrics = recipe.metrics(recipe.model, batch)
        loss = float(recipe.loss(recipe.model, batch))
    scaled = series_recipe("sunspots", attention="none", seed=0, hidden=8)
    with torch.no_grad():
        again = float(scaled.loss(scaled.model, batch))
    assert loss == pytest.approx(again)  # same seed, same model
    assert metrics["pinball"] > 10 * loss  # sunspot units: the scaler's std is ~40
    with pytest.raises(ValueError, match="unknown option"):
        series_recipe("co2", label_smoothing=0.1)
    with pytest.raises(ValueError, match="attention must be one of"):
        series_recipe("co2", attention="local")


def test_recipe_fraction_and_user_file(tmp_path):
    full = series_recipe("co2", attention="none")
    small = series_recipe("co2", attention="none", fraction=0.05)
    assert len(small.train) == round(len(full.train) * 0.05) and len(small.val) == len(full.val)
    path = tmp_path / "s.csv"
    path.write_text("y\n" + "\n".join(str(math.sin(i / 3)) for i in range(200)) + "\n")
    recipe = series_recipe("mine", data=path, column="y", period=12, horizon=3)
    assert recipe.name == "mine" and recipe.config.window == 24 and recipe.config.horizon == 3
    with pytest.raises(ValueError, match="needs options column="):
        series_recipe("mine", data=path)
    levels = series_recipe("co2", quantiles=[0.2, 0.5, 0.8]).config.quantiles  # a CLI list
    assert levels == (0.2, 0.5, 0.8)


def test_recipe_trains_with_the_trainer():
    train = pytest.importorskip("attnkit.train.loop")
    recipe = series_recipe("co2", attention="soft", seed=0, hidden=8, fraction=0.3)
    config = train.TrainConfig(epochs=8, batch_size=32, lr=1e-2, patience=None, progress=False)
    result = train.Trainer(recipe.model, config, loss=recipe.loss, metrics=recipe.metrics).fit(
        recipe.train, recipe.val, recipe.test
    )
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert set(result.test) >= {"loss", "mae", "pinball"}


def test_classical_baselines_by_hand():
    """On co2's test windows: each baseline's MAE is that of its residual-median band, in ppm."""
    from attnkit.data.series import load_series, split_series
    from attnkit.models.timeseries import LinearAR, residual_quantiles, seasonal_naive
    from attnkit.tasks import SERIES_SETTINGS, classical_baselines

    splits = split_series(load_series("co2"), **SERIES_SETTINGS["co2"])
    train, test, scale = splits.train, splits.test, splits.scaler.std
    out = classical_baselines(splits, (0.1, 0.5, 0.9))
    fitted = seasonal_naive(train.past, 12, 12)
    point = seasonal_naive(test.past, 12, 12)
    median = residual_quantiles(point, train.future - fitted, (0.5,))[..., 0]
    assert out["seasonal naive"]["mae"] == pytest.approx(
        float((median - test.future).abs().mean()) * scale
    )
    ar = LinearAR.fit(train.past, train.future)
    bare = float((ar.predict(test.past) - test.future).abs().mean()) * scale
    assert out["linear AR"]["mae_point"] == pytest.approx(bare)
    assert set(out["linear AR"]) == {"mae", "pinball", "mae_point"}


def test_matched_hidden_is_the_nearest_count():
    from attnkit.models.timeseries import AttentionForecaster, ForecasterConfig
    from attnkit.tasks import SERIES_SETTINGS, matched_hidden

    def count(hidden, attention):
        config = ForecasterConfig(**SERIES_SETTINGS["co2"], hidden=hidden, attention=attention)
        return sum(p.numel() for p in AttentionForecaster(config).parameters())

    target = count(32, "soft")
    width = matched_hidden("co2", "multihead", target, range(8, 65))
    assert width % 4 == 0
    assert all(
        abs(count(width, "multihead") - target) <= abs(count(h, "multihead") - target)
        for h in range(8, 65, 4)
    )
    assert matched_hidden("co2", "soft", target) == 32
