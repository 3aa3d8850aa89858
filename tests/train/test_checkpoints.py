import json
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from toy import mlp, mse, regression

from attnkit.train import TrainConfig, Trainer, load_checkpoint, save_checkpoint
from attnkit.train.checkpoint import TrainState, get_rng_state, set_rng_state

QUIET = {"progress": False, "device": "cpu"}
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


@dataclass(frozen=True)
class ToyConfig:
    hidden: int = 32  # hidden units
    dropout: float = 0.2  # dropout after the hidden layer


class Interrupted(Exception):
    pass


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_round_trip_is_exact(tmp_path, device):
    torch.manual_seed(0)
    model = mlp(dropout=0.2)
    config = TrainConfig(epochs=2, batch_size=16, weight_decay=0.1, progress=False, device=device)
    trainer = Trainer(model, config, loss=mse, model_config=ToyConfig())
    result = trainer.fit(regression(64), regression(32, seed=1))
    optimizer = torch.optim.AdamW(model.parameters())
    optimizer.zero_grad()
    mse(model, [t.to(device) for t in regression(8)[:]]).backward()
    optimizer.step()
    state = TrainState(epoch=2, step=8, history=result.history, best_val_loss=0.5, best_epoch=2)
    best = {k: v + 1 for k, v in model.state_dict().items()}
    path = save_checkpoint(
        tmp_path / "ckpt",
        model,
        optimizer,
        state,
        best=best,
        train_config=config,
        model_config=ToyConfig(hidden=7),
    )
    loaded = load_checkpoint(path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.weights[name], tensor.cpu())
        assert torch.equal(loaded.best[name], best[name].cpu())
    for index, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            assert torch.equal(loaded.optimizer["state"][index][key], value.cpu())
    assert loaded.state == state
    assert loaded.model_config == {
        "type": "test_checkpoints.ToyConfig",
        "fields": {"hidden": 7, "dropout": 0.2},
    }
    assert loaded.train_config["weight_decay"] == 0.1
    json.loads((path / "state.json").read_text())  # plain JSON


def test_rng_states_restore_the_same_draws():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    saved = json.loads(json.dumps(get_rng_state()))
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(saved)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2]


@pytest.mark.parametrize("device", DEVICES)
def test_a_resumed_run_ends_with_the_uninterrupted_parameters(tmp_path, device):
    # dropout draws from the RNG and AdamW carries moments: both must resume exactly
    config = {"epochs": 5, "batch_size": 16, "weight_decay": 0.01, "patience": 3}
    config.update(progress=False, device=device)
    train, val = regression(96), regression(32, seed=1)

    torch.manual_seed(0)
    whole = mlp(dropout=0.3)
    expected = Trainer(whole, TrainConfig(**config, checkpoint_dir=tmp_path / "a"), loss=mse).fit(
        train, val
    )

    calls = {"n": 0}

    def crashing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 2 * 6 + 2 * 2 + 3:  # in epoch 3: 6 train and 2 val batches per epoch
            raise Interrupted
        return mse(model, batch)

    torch.manual_seed(0)
    config_b = TrainConfig(**config, checkpoint_dir=tmp_path / "b")
    with pytest.raises(Interrupted):
        Trainer(mlp(dropout=0.3), config_b, loss=crashing_loss).fit(train, val)
    assert load_checkpoint(tmp_path / "b" / "checkpoint").state.epoch == 2

    torch.manual_seed(123)  # a different initialisation: everything must come from the checkpoint
    resumed_model = mlp(dropout=0.3)
    resumed = Trainer(resumed_model, config_b, loss=mse).fit(train, val, resume=tmp_path / "b")
    assert resumed.history == [
        {**r, "seconds": s["seconds"]}
        for r, s in zip(expected.history, resumed.history, strict=True)
    ]
    for name, tensor in whole.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name
    assert resumed.steps == expected.steps


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"state\.json"):
        load_checkpoint(tmp_path)
