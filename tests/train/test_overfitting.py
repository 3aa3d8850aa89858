import logging

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from toy import accuracy, cross_entropy, mlp

from attnkit.train import OverfitCheck, TrainConfig, Trainer, gap_warnings

QUIET = {"progress": False, "device": "cpu"}


def _history(train_losses, val_losses, **metrics):
    return [
        {"epoch": i + 1, "train_loss": t, "val_loss": v, **{k: m[i] for k, m in metrics.items()}}
        for i, (t, v) in enumerate(zip(train_losses, val_losses, strict=True))
    ]


def _warnings_per_epoch(history, check):
    return [gap_warnings(history[: i + 1], check) for i in range(len(history))]


def test_diverging_losses_warn_once_when_they_begin():
    history = _history([1.0, 0.8, 0.6, 0.5, 0.4, 0.3], [1.0, 0.9, 0.95, 1.0, 1.1, 1.2])
    fired = _warnings_per_epoch(history, OverfitCheck(epochs=3, accuracy_gap=None))
    # epochs 3, 4 and 5 each raise val loss and lower train loss: the third of them warns
    assert [len(w) for w in fired] == [0, 0, 0, 0, 1, 0]
    # a second stretch of diverging losses later in the run does not warn again
    train = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04]
    val = [1.0, 0.9, 0.95, 1.0, 1.1, 1.2, 1.0, 1.3, 1.4, 1.5]
    again = _warnings_per_epoch(_history(train, val), OverfitCheck(accuracy_gap=None))
    assert [len(w) for w in again] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert "epoch 5" in fired[4][0] and "0.9000 -> 1.1000" in fired[4][0]


def test_two_rising_epochs_or_both_losses_rising_stay_quiet():
    check = OverfitCheck(epochs=3, accuracy_gap=None)
    assert not any(_warnings_per_epoch(_history([1, 0.8, 0.6], [1, 1.1, 1.2]), check))
    # val rises but so does train loss (e.g. a too-high learning rate): not overfitting
    assert not any(_warnings_per_epoch(_history([1, 1.1, 1.2, 1.3], [1, 1.1, 1.2, 1.3]), check))


def test_accuracy_gap_warns_once_above_the_threshold():
    history = _history(
        [1] * 5,
        [1] * 5,
        train_accuracy=[0.8, 0.95, 0.97, 0.9, 0.99],
        val_accuracy=[0.75, 0.79, 0.8, 0.8, 0.8],
    )
    fired = _warnings_per_epoch(history, OverfitCheck(epochs=0, accuracy_gap=0.15))
    assert [len(w) for w in fired] == [0, 1, 0, 0, 0]  # gaps .05 .16 .17 .10 .19
    assert "by 0.160" in fired[1][0]


def test_check_rejects_bad_settings():
    with pytest.raises(ValueError, match="accuracy_gap"):
        OverfitCheck(accuracy_gap=1.5)
    with pytest.raises(ValueError, match="epochs"):
        OverfitCheck(epochs=-1)


def _classification(n, seed, noise_labels):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    if noise_labels:
        y = torch.randint(0, 2, (n,), generator=generator)
    return TensorDataset(x, y)


@pytest.mark.slow
def test_detector_fires_while_memorising_random_labels(caplog):
    # 48 examples with random labels and a wide MLP: train accuracy climbs to 1, validation
    # stays at chance and its loss rises
    torch.manual_seed(0)
    model = mlp(hidden=256, inputs=8, outputs=2)
    config = TrainConfig(epochs=40, batch_size=16, lr=3e-3, patience=None, **QUIET)
    with caplog.at_level(logging.WARNING, logger="attnkit.train"):
        result = Trainer(model, config, loss=cross_entropy, metrics=accuracy).fit(
            _classification(48, 0, noise_labels=True), _classification(200, 1, noise_labels=True)
        )
    assert result.history[-1]["train_accuracy"] > 0.95
    assert result.history[-1]["val_accuracy"] < 0.7
    assert any("validation loss rose" in w for w in result.warnings)
    assert any("train accuracy exceeds" in w for w in result.warnings)
    assert [r.getMessage() for r in caplog.records] == result.warnings


def test_detector_stays_quiet_on_a_healthy_run():
    torch.manual_seed(0)
    model = nn.Linear(8, 2)
    config = TrainConfig(epochs=10, batch_size=32, lr=1e-2, patience=None, **QUIET)
    result = Trainer(model, config, loss=cross_entropy, metrics=accuracy).fit(
        _classification(512, 0, noise_labels=False), _classification(200, 1, noise_labels=False)
    )
    assert result.history[-1]["val_accuracy"] > 0.9
    assert result.warnings == []
