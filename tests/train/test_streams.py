"""The one trainer over a stream of batches: a step budget, warm-up + cosine schedule, AdamW's
betas and decay on every parameter, RNG left to the caller, per-step losses; each checked
against a hand-written PyTorch loop, bit for bit, or against hand-computed numbers."""

import itertools
import math

import pytest
import torch
from torch import nn

from attnkit.train import TrainConfig, Trainer, count_parameters
from attnkit.train.loop import lr_factor

QUIET = {"progress": False, "device": "cpu", "patience": None}


def _stream(seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in itertools.count():
        x = torch.randn(8, 4, generator=generator)
        yield x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(8, generator=generator)


def _mse(model, batch):
    x, y = batch
    return ((model(x).squeeze(-1) - y) ** 2).mean()


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Dropout(0.2), nn.Linear(8, 1))


def test_lr_factor_by_hand():
    config = TrainConfig(warmup=4, schedule="cosine")
    factors = [lr_factor(step, 10, config) for step in range(10)]
    expected = [0.25, 0.5, 0.75, 1.0, 1.0]  # warm-up (s + 1) / 4, then cos(0)
    expected += [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(1, 6)]
    assert factors == pytest.approx(expected, abs=1e-12)
    assert factors[7] == pytest.approx(0.5)  # half way through the decay
    constant = TrainConfig(warmup=2)
    assert [lr_factor(s, 10, constant) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_a_stream_run_is_the_hand_written_warmup_cosine_adamw_loop():
    """The testbed's former loop: AdamW(betas 0.9/0.98, decay on all parameters), LambdaLR
    warm-up + cosine, clipping at 1, seeded before the model is built."""
    steps, warmup = 12, 3
    reference = _model(0)
    optimizer = torch.optim.AdamW(
        reference.parameters(), lr=3e-2, weight_decay=0.1, betas=(0.9, 0.98)
    )

    def schedule(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * ((step - warmup) / max(1, steps - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    reference.train()
    expected = []
    for batch in itertools.islice(_stream(1), steps):
        loss = _mse(reference, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        expected.append(loss.item())

    model = _model(0)
    config = TrainConfig(
        max_steps=steps, lr=3e-2, weight_decay=0.1, decay="all", betas=(0.9, 0.98),
        schedule="cosine", warmup=warmup, grad_clip=1.0, seed=None, **QUIET,
    )  # fmt: skip
    seen = []
    result = Trainer(model, config, loss=_mse, on_step=lambda s, v: seen.append((s, v))).fit(
        _stream(1)
    )
    assert result.losses == expected and result.steps == steps
    assert seen == list(zip(range(1, steps + 1), expected, strict=True))
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)
    (record,) = result.history  # a stream is one epoch; no validation, no early stopping
    assert record["step"] == steps and "val_loss" not in record and result.best_epoch is None
    assert record["lr"] == pytest.approx(3e-2 * schedule(steps - 1))
    assert record["train_loss"] == pytest.approx(sum(expected) / steps)


def test_seed_none_leaves_the_generator_to_the_caller():
    """The glimpse models' former loop: plain Adam, no clipping, dropout drawing from the torch
    generator the caller seeded (a reseed in fit would change every mask)."""
    reference = _model(5)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    for batch in itertools.islice(_stream(2), 6):
        loss = _mse(reference, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model = _model(5)
    config = TrainConfig(max_steps=6, lr=1e-2, grad_clip=None, seed=None, **QUIET)
    Trainer(model, config, loss=_mse).fit(_stream(2))
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)
    reseeded = _model(5)
    Trainer(reseeded, TrainConfig(max_steps=6, lr=1e-2, grad_clip=None, seed=0, **QUIET),
            loss=_mse).fit(_stream(2))  # fmt: skip
    assert not torch.equal(reseeded[0].weight, model[0].weight)  # other dropout masks


def test_decay_all_also_shrinks_biases_and_norm_gains():
    # a loss with zero gradient leaves only AdamW's decoupled decay: p <- p * (1 - lr * wd)
    for decay, shrinks_vectors in (("all", True), ("matrices", False)):
        model = _model(0)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        config = TrainConfig(max_steps=1, lr=0.1, weight_decay=0.5, decay=decay, **QUIET)
        zero = lambda m, b: sum((p * 0.0).sum() for p in m.parameters())  # noqa: E731
        Trainer(model, config, loss=zero).fit(iter([None]))
        for name, value in model.state_dict().items():
            shrunk = value.dim() >= 2 or shrinks_vectors
            factor = 1 - 0.1 * 0.5 if shrunk else 1.0
            torch.testing.assert_close(value, before[name] * factor, rtol=0, atol=1e-7)


def test_a_finite_stream_ends_the_run_and_bad_settings_are_refused():
    model = _model(0)
    result = Trainer(model, TrainConfig(max_steps=10, **QUIET), loss=_mse).fit(
        itertools.islice(_stream(0), 4)
    )
    assert result.steps == 4 and len(result.losses) == 4
    with pytest.raises(ValueError, match="max_steps must be set"):
        Trainer(model, TrainConfig(**QUIET), loss=_mse).fit(_stream(0))
    with pytest.raises(ValueError, match="resume needs a Dataset"):
        Trainer(model, TrainConfig(max_steps=2, **QUIET), loss=_mse).fit(_stream(0), resume=".")
    for bad, match in (
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"decay": "none"}, "decay must be one of"),
        ({"warmup": -1}, "warmup must be >= 0"),
        ({"betas": (0.9, 1.0)}, "betas must be two numbers"),
    ):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_count_parameters_by_hand():
    assert count_parameters(nn.Linear(3, 2)) == 3 * 2 + 2
    tied = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    tied[1].weight = tied[0].weight  # tied input/output embeddings count once
    assert count_parameters(tied) == 20
    frozen = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    frozen[0].requires_grad_(False)
    assert count_parameters(frozen) == 8 + 3
    assert count_parameters(frozen, trainable_only=True) == 3
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        count_parameters("a model")
