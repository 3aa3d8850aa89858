import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from toy import accuracy, cross_entropy, mlp, mse, regression

from attnkit.tasks import Recipe
from attnkit.train import TrainConfig, Trainer

QUIET = {"progress": False, "device": "cpu"}
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("device", DEVICES)
def test_loss_falls_on_a_toy_regression(device):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    config = TrainConfig(
        epochs=8, batch_size=32, lr=0.05, patience=None, progress=False, device=device
    )
    result = Trainer(model, config, loss=mse).fit(regression(256), regression(64, seed=1))
    assert len(result.history) == 8
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"] / 5
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 3
    assert result.steps == 8 * 8  # 256 / 32 batches per epoch
    assert torch.allclose(
        model.weight.detach().cpu().squeeze(), torch.tensor([1.0, -2.0, 0.5, 3.0]), atol=0.3
    )


def test_same_seed_same_run_other_seed_other_run():
    def run(seed):
        torch.manual_seed(0)
        model = mlp(dropout=0.2)
        config = TrainConfig(epochs=2, batch_size=16, seed=seed, **QUIET)
        Trainer(model, config, loss=mse).fit(regression(64), regression(32, seed=1))
        return _params(model)

    first, again, other = run(3), run(3), run(4)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    # validation labels are the negated training labels: val loss is lowest at epoch 1 and
    # rises while the model fits the training split
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    config = TrainConfig(
        epochs=30, batch_size=32, lr=0.05, patience=3, checkpoint_dir=tmp_path, **QUIET
    )
    trainer = Trainer(model, config, loss=mse)
    result = trainer.fit(regression(256), regression(64, seed=1, sign=-1.0))
    assert result.stopped_early
    assert result.best_epoch == 1
    assert len(result.history) == result.best_epoch + 3
    val_losses = [r["val_loss"] for r in result.history]
    assert result.best_val_loss == min(val_losses) == val_losses[0]
    # the model ends with epoch 1's weights: its validation loss is epoch 1's
    assert trainer.evaluate(regression(64, seed=1, sign=-1.0))["loss"] == pytest.approx(
        val_losses[0], rel=1e-6
    )
    assert result.final["epoch"] == 1


def test_max_steps_is_the_step_budget():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    config = TrainConfig(epochs=50, batch_size=32, max_steps=11, patience=None, **QUIET)
    result = Trainer(model, config, loss=mse).fit(regression(256), regression(32, seed=1))
    assert result.steps == 11
    assert [r["step"] for r in result.history] == [8, 11]  # 8 batches per epoch


def test_weight_decay_shrinks_matrices_and_spares_biases():
    # a loss with zero gradient leaves only AdamW's decoupled decay: w <- w * (1 - lr * wd)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    before = _params(model)
    config = TrainConfig(epochs=1, batch_size=256, lr=0.1, weight_decay=0.5, max_steps=1, **QUIET)
    Trainer(model, config, loss=lambda m, b: (m.weight * 0.0).sum() + (m.bias * 0.0).sum()).fit(
        regression(256), regression(8, seed=1)
    )
    assert torch.allclose(model.weight, before["weight"] * (1 - 0.1 * 0.5), atol=1e-7)
    assert torch.equal(model.bias, before["bias"])


def test_metrics_json_plot_and_test_split(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    train, val = TensorDataset(x[:150], y[:150]), TensorDataset(x[150:], y[150:])
    torch.manual_seed(0)
    recipe = Recipe(
        name="toy",
        model=mlp(outputs=2),
        train=train,
        val=val,
        test=val,
        loss=cross_entropy,
        metrics=accuracy,
        config=None,
    )
    config = TrainConfig(epochs=6, batch_size=16, lr=0.01, checkpoint_dir=tmp_path, **QUIET)
    result = Trainer(recipe.model, config, loss=recipe.loss, metrics=recipe.metrics).fit(
        recipe.train, recipe.val, recipe.test
    )
    assert result.history[-1]["val_accuracy"] > 0.9
    assert 0.9 < result.history[-1]["train_accuracy"] <= 1.0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["history"] == result.history
    assert saved["test"] == result.test
    assert result.test["accuracy"] == pytest.approx(result.final["val_accuracy"])
    assert saved["config"]["checkpoint_dir"] == str(tmp_path)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.metrics_path == tmp_path / "metrics.json"


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=0)
    with pytest.raises(TypeError, match="model"):
        Trainer("not a model", loss=mse)
    with pytest.raises(ValueError, match="train dataset"):
        Trainer(nn.Linear(4, 1), TrainConfig(**QUIET), loss=mse).fit(
            TensorDataset(torch.zeros(0, 4), torch.zeros(0)), regression(8)
        )


def test_non_finite_loss_stops_with_the_step():
    config = TrainConfig(epochs=1, **QUIET)
    with pytest.raises(FloatingPointError, match="step 1"):
        Trainer(nn.Linear(4, 1), config, loss=lambda m, b: mse(m, b) * float("nan")).fit(
            regression(64), regression(8)
        )
