"""explain() on attnkit text-classifier checkpoints: load, every method, report, errors.

Oracles: the model's own forward (logits, pooling weights), the model run on a sequence with
the hidden word deleted (BiGRU), rollout and relevance written out by hand through the pooling.
"""

import dataclasses
import json

import pytest
import torch

from attnkit.data.text import save_vocabulary
from attnkit.interpret import rollout
from attnkit.interpret.explanation import STEPS, explain
from attnkit.interpret.loading import WordTokenizer, load_explainable
from attnkit.interpret.relevance_maps import relevance
from attnkit.recording import capture
from attnkit.tasks import text_recipe
from attnkit.train import TrainConfig, Trainer
from attnkit.train.checkpoint import TrainState, save_checkpoint

pytest.importorskip("captum")
pytest.importorskip("safetensors")

TEXTS = ["class0_word1 filler3 filler7 filler2", "filler5 class1_word0 filler1"]
SMALL = {"n": 96, "length": 8, "classes": 2, "fillers": 12, "embed_dim": 16, "hidden": 8}


def _trained_run(tmp_path, attention):
    """A run directory after 3 training steps, with the vocabulary saved beside it."""
    options = {**SMALL, "attention_dim": 8, "num_layers": 2, "num_heads": 2, "dropout": 0.0}
    recipe = text_recipe(attention, seed=0, **options)
    run = tmp_path / attention
    config = TrainConfig(epochs=1, max_steps=3, batch_size=16, checkpoint_dir=run, progress=False)
    trainer = Trainer(recipe.model, config, loss=recipe.loss, model_config=recipe.config)
    trainer.fit(recipe.train, recipe.val)
    save_vocabulary(run, recipe.train.vocabulary.tokens, recipe.train.classes)
    return run, recipe


@pytest.fixture(scope="module")
def multihead(tmp_path_factory):
    return _trained_run(tmp_path_factory.mktemp("runs"), "multihead")


@pytest.mark.parametrize("attention", ["soft", "none", "hard", "multihead"])
def test_read_from_embeddings_is_the_models_forward(attention):
    recipe = text_recipe(attention, seed=0, **SMALL, num_heads=2)
    model = recipe.model.eval()
    ids, mask, _ = WordTokenizer(recipe.train.vocabulary.tokens)(TEXTS)
    with torch.no_grad():
        expected = model(ids, mask)
        read = model.forward_embeddings(model.embed(ids), mask)
        logits, weights = read.logits, read.weights
    torch.testing.assert_close(logits, expected.logits)
    torch.testing.assert_close(weights, expected.weights)


def test_a_hidden_word_is_deleted_for_the_bigru(tmp_path):
    _, recipe = _trained_run(tmp_path, "soft")
    model = recipe.model.eval()
    ids, mask, _ = WordTokenizer(recipe.train.vocabulary.tokens)(TEXTS[:1])
    visible = mask.clone()
    visible[0, 1] = False
    without = torch.cat([ids[:, :1], ids[:, 2:]], dim=1)  # the word at position 1 deleted
    with torch.no_grad():
        read = model.forward_embeddings(model.embed(ids), visible)
        logits, weights = read.logits, read.weights
        expected = model(without)
    torch.testing.assert_close(logits, expected.logits)
    torch.testing.assert_close(weights[:, [0, 2, 3]], expected.weights)
    assert weights[0, 1] == 0


def test_explain_a_multihead_checkpoint_end_to_end(multihead):
    run, recipe = multihead
    target = load_explainable(str(run))  # the run directory: checkpoint/ is inside
    assert target.kind == "attnkit" and target.path == run / "checkpoint"
    assert target.classes == recipe.train.classes
    calls = []
    result = explain(
        target.model, target.tokenizer, TEXTS, steps=4, progress=lambda *a: calls.append(a)
    )
    assert calls == [(s, i, len(STEPS)) for i, s in enumerate(STEPS)] + [("done", 5, 5)]
    methods = {
        "attention pooling", "rollout", "relevance", "gradient x input", "integrated gradients",
        "leave-one-out",
    }  # fmt: skip
    assert set(result.scores) == methods
    assert result.mask.tolist() == [[True] * 4, [True] * 3 + [False]]
    for name, scores in result.scores.items():
        assert scores.shape == (2, 4) and scores[1, 3] == 0, name
    model = target.model
    ids, mask, _ = target.tokenizer(TEXTS)
    with capture(model, grad=True) as rec:
        output = model(ids, mask)
        predicted = output.logits.argmax(-1)
        output.weights.retain_grad()
        output.logits.gather(1, predicted[:, None]).sum().backward()
    assert torch.equal(result.predicted, predicted)
    pooling = output.weights.detach()
    torch.testing.assert_close(result.scores["attention pooling"], pooling)
    by_hand = torch.einsum("bk,bkn->bn", pooling, rollout(rec.weights))
    torch.testing.assert_close(result.scores["rollout"], by_hand * mask)
    # the pooled vector is Σ_t w_t h_t, so ∂ logit_c / ∂ w_t = W_c · h_t
    gradient = torch.einsum("btd,bd->bt", output.states.detach(), model.head.weight[predicted])
    positive = (gradient * pooling).clamp_min(0)
    by_hand = torch.einsum("bk,bkn->bn", positive, relevance(rec.weights, rec.grads))
    torch.testing.assert_close(result.scores["relevance"], by_hand * mask)
    assert len(result.verdicts) == 5
    page = result.report(example=1)
    assert "class1_word0" in page and "Can these explanations be read as importance?" in page
    assert page.count("data:image/png;base64,") == 2 * 2 + 2  # layer x head grid, last layer


def test_explanation_saves_every_figure(multihead, tmp_path):
    run, _ = multihead
    target = load_explainable(str(run))
    result = explain(target.model, target.tokenizer, TEXTS, steps=2)
    written = result.save_figures(tmp_path / "figures", example=1)
    stems = {p.stem for p in written}
    assert len(written) == 2 * len(stems) == 2 * (2 * 2 + len(result.scores))
    assert "importance.attention-pooling" in stems and "encoder.blocks.1.attn.head1" in stems
    assert {p.suffix for p in written} == {".png", ".svg"}


def test_explain_a_bigru_checkpoint_and_unknown_words(tmp_path):
    run, _ = _trained_run(tmp_path, "soft")
    target = load_explainable(str(run / "checkpoint"))
    result = explain(target.model, target.tokenizer, ["filler3 zebra class0_word2"], steps=2)
    assert "attention pooling" in result.scores and "rollout" not in result.scores
    assert result.tokens == [["filler3", "<unk:zebra>", "class0_word2"]] and result.weights == {}
    page = result.report()
    assert "&lt;unk:zebra&gt;" in page and "data:image/png" not in page


@pytest.mark.parametrize(("attention", "method"), [("hard", "hard attention"), ("none", None)])
def test_explain_hard_and_mean_pooling(tmp_path, attention, method):
    """Hard pooling is explained by the tokens it reads; the mean's uniform weights are left out."""
    run, _ = _trained_run(tmp_path, attention)
    target = load_explainable(str(run))
    result = explain(target.model, target.tokenizer, TEXTS, steps=2)
    behaviour = ["gradient x input", "integrated gradients", "leave-one-out"]
    assert list(result.scores) == ([method] if method else []) + behaviour
    if method:
        ids, mask, _ = target.tokenizer(TEXTS)
        with torch.no_grad():
            read = target.model(ids, mask).weights
        assert torch.equal(result.scores[method], read) and read.sum(-1).eq(1).all()
    assert len(result.verdicts) == len(result.scores) - 1


def test_load_explainable_errors(tmp_path, multihead):
    run, _ = multihead
    with pytest.raises(ValueError, match="'minilm', a Hugging Face model directory .*no such path"):
        load_explainable(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="is none of these"):
        load_explainable(str(tmp_path))
    bare = tmp_path / "bare"
    (bare / "checkpoint").mkdir(parents=True)
    for name in ("state.json", "model.safetensors", "best.safetensors", "optimizer.pt"):
        source = run / "checkpoint" / name
        if source.is_file():
            (bare / "checkpoint" / name).write_bytes(source.read_bytes())
    with pytest.raises(ValueError, match="no vocabulary.json"):
        load_explainable(str(bare))
    save_vocabulary(bare, ["<pad>", "<unk>", "word"], ["a", "b"])
    with pytest.raises(ValueError, match="3 tokens and 2 classes do not fit"):
        load_explainable(str(bare))

    @dataclasses.dataclass(frozen=True)
    class OtherConfig:
        width: int = 3

    other = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
    save_checkpoint(tmp_path / "other", other, optimizer, TrainState(), model_config=OtherConfig())
    with pytest.raises(ValueError, match="explain takes attnkit text classifiers"):
        load_explainable(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="must each hold a word"):
        WordTokenizer(("<pad>", "<unk>"))(["a word", "   "])
    assert json.loads((run / "vocabulary.json").read_text())["lowercase"] is True
