"""Seq2seq with Bahdanau attention and the fixed-context baseline: shapes, padding, training,
greedy decoding against teacher forcing, and the dates recipe."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from attnkit.data.dates import make_date_task
from attnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig, exact_match, sequence_loss
from attnkit.tasks import dates_recipe

VARIANTS = ["soft", "none"]


@pytest.fixture(scope="module")
def task():
    return make_date_task(64, 8, 8, seed=5)


def model_for(task, attention, **kwargs):
    torch.manual_seed(0)
    config = Seq2SeqConfig(
        len(task.source_vocab), len(task.target_vocab), attention=attention, **kwargs
    )
    return Seq2Seq(config)


@pytest.mark.parametrize("attention", VARIANTS)
def test_shapes_and_alignments(task, attention):
    model = model_for(task, attention, embed_dim=8, hidden=16, attention_dim=8).eval()
    batch = task.train[:5]
    result = model(batch["source"], batch["length"], batch["target"])
    assert result.logits.shape == (5, 11, len(task.target_vocab))
    assert torch.equal(result.tokens, result.logits.argmax(-1))
    if attention == "none":
        assert result.alignments is None
        return
    steps = batch["source"].shape[1]
    assert result.alignments.shape == (5, 11, steps)
    real = torch.arange(steps) < batch["length"][:, None]  # (5, T_in)
    torch.testing.assert_close(result.alignments.sum(-1), torch.ones(5, 11))
    assert result.alignments.masked_select(~real[:, None, :]).eq(0).all()


@pytest.mark.parametrize("attention", VARIANTS)
def test_padding_does_not_change_results(task, attention):
    model = model_for(task, attention, embed_dim=8, hidden=16, attention_dim=8).eval()
    batch = task.train[:6]
    source, lengths, target = batch["source"], batch["length"], batch["target"]
    reference = model(source, lengths, target)
    longer = torch.cat([source, torch.zeros(6, 7, dtype=torch.long)], dim=1)
    garbage = longer.clone()
    pad = torch.arange(longer.shape[1]) >= lengths[:, None]
    garbage[pad] = torch.randint(
        2, 60, (int(pad.sum()),), generator=torch.Generator().manual_seed(1)
    )
    for padded in (longer, garbage):
        result = model(padded, lengths, target)
        torch.testing.assert_close(result.logits, reference.logits, atol=1e-5, rtol=1e-5)
        if attention == "soft":
            torch.testing.assert_close(
                result.alignments[..., : source.shape[1]], reference.alignments, atol=1e-6, rtol=0
            )
    # one example alone gives what it gave in the batch
    alone = model(source[2:3, : int(lengths[2])], lengths[2:3], target[2:3])
    torch.testing.assert_close(alone.logits, reference.logits[2:3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", VARIANTS)
def test_loss_falls_on_a_tiny_slice(task, attention):
    model = model_for(task, attention, embed_dim=16, hidden=32, attention_dim=16)
    batch = task.train[:16]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        result = model(batch["source"], batch["length"], batch["target"])
        loss = sequence_loss(result.logits, batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.0  # about log(15) at the start
    assert losses[-1] < 0.5 * losses[0]


def test_greedy_decoding_equals_teacher_forced_argmax_on_a_trained_toy(task):
    model = model_for(task, "soft", embed_dim=16, hidden=32, attention_dim=16)
    batch = task.train[:12]
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(60):
        result = model(batch["source"], batch["length"], batch["target"])
        loss = sequence_loss(result.logits, batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    forced = model(batch["source"], batch["length"], batch["target"])
    decoded = model.generate(batch["source"], batch["length"], max_len=20)
    assert torch.equal(forced.tokens, batch["target"])  # the toy is learnt
    assert torch.equal(decoded.tokens, forced.tokens)  # stopped right after </s>
    torch.testing.assert_close(decoded.logits, forced.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decoded.alignments, forced.alignments, atol=1e-6, rtol=0)
    assert exact_match(decoded.tokens, batch["target"]).all()


@pytest.mark.parametrize("attention", VARIANTS)
def test_greedy_tokens_are_the_argmax_when_fed_back(task, attention):
    model = model_for(task, attention, embed_dim=8, hidden=16, attention_dim=8).eval()
    batch = task.train[:8]
    decoded = model.generate(batch["source"], batch["length"], max_len=6)
    assert decoded.tokens.shape[1] <= 6 and decoded.logits.shape[:2] == decoded.tokens.shape
    forced = model(batch["source"], batch["length"], decoded.tokens.clamp(min=1))
    eos = model.config.eos_id
    for row in range(8):
        tokens = decoded.tokens[row].tolist()
        end = tokens.index(eos) + 1 if eos in tokens else len(tokens)
        assert forced.tokens[row, :end].tolist() == tokens[:end]
        assert all(t == 0 for t in tokens[end:])


def test_exact_match_pads_before_comparing():
    target = torch.tensor([[5, 6, 3], [5, 6, 3]])
    tokens = torch.tensor([[5, 6, 3, 0], [5, 7, 3, 0]])
    assert exact_match(tokens, target).tolist() == [True, False]
    assert exact_match(tokens[:, :2], target).tolist() == [False, False]


def test_config_and_input_errors(task):
    with pytest.raises(ValueError, match=r"attention must be one of \['soft', 'none'\]"):
        Seq2SeqConfig(attention="hard")
    with pytest.raises(ValueError, match="hidden must be positive"):
        Seq2SeqConfig(hidden=0)
    model = model_for(task, "soft", embed_dim=8, hidden=8, attention_dim=8)
    batch = task.train[:2]
    with pytest.raises(ValueError, match="lengths must be in"):
        model(batch["source"], torch.tensor([0, 3]), batch["target"])
    with pytest.raises(ValueError, match="lengths must be"):
        model(batch["source"], torch.tensor([3]), batch["target"])
    with pytest.raises(ValueError, match="max_len"):
        model.generate(batch["source"], batch["length"], max_len=0)


def test_dates_recipe():
    recipe = dates_recipe("soft", seed=1, fraction=0.5, n_train=40, n_val=8, n_test=8, hidden=16)
    assert recipe.name == "dates-soft" and len(recipe.train) == 20 and len(recipe.val) == 8
    assert recipe.config.hidden == 16 and recipe.config.attention == "soft"
    batch = next(iter(DataLoader(recipe.train, batch_size=4)))
    loss = recipe.loss(recipe.model, batch)
    assert loss.ndim == 0 and loss.item() > 1.0
    recipe.model.eval()
    values = recipe.metrics(recipe.model, batch)
    assert set(values) == {"token_accuracy", "exact_match"}
    assert 0.0 <= values["token_accuracy"] <= 1.0 and values["exact_match"] == 0.0
    again = dates_recipe("soft", seed=1, fraction=0.5, n_train=40, n_val=8, n_test=8, hidden=16)
    assert torch.equal(again.train.sources, recipe.train.sources)
    for a, b in zip(again.model.parameters(), recipe.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert dates_recipe("none", n_train=10, n_val=2, n_test=2).model.attention is None


def test_dates_recipe_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\['soft', 'none'\].*'multihead'"):
        dates_recipe("multihead")
    with pytest.raises(ValueError, match="reads no file"):
        dates_recipe("soft", data=tmp_path / "x.csv")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['widht'\]"):
        dates_recipe("soft", n_train=10, n_val=2, n_test=2, widht=3)
    with pytest.raises(ValueError, match="fraction"):
        dates_recipe("soft", fraction=0.0)
