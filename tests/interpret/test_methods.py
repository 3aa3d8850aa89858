"""The embeddings seam (``TextClassifier.forward_embeddings``, the model views) and the registry of
explanation methods that ``explain()`` runs.

Oracles: the classifier's forward and ``_read`` as they were written before the seam (copied
below verbatim as references), a Hugging Face classifier run on its token ids, Kendall's τ
computed by hand for a registered method, and the built-in methods' own numbers.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkit.interpret import ModelView, explain, model_view, register_method
from attnkit.interpret.attribution import SIGNED, is_signed
from attnkit.interpret.classifier_views import HuggingFaceView, TextClassifierView
from attnkit.interpret.explanation import STEPS
from attnkit.interpret.faithfulness import rank_agreement
from attnkit.interpret.loading import WordTokenizer
from attnkit.interpret.methods import METHODS, REFERENCE, unregister_method
from attnkit.models.text import TextClassifier, TextClassifierConfig

pytest.importorskip("captum")

WORDS = ("<pad>", "<unk>", *(f"w{i}" for i in range(20)))
TEXTS = ["w1 w2 w3 w4 w5", "w6 w7", "w8 w9 w10 w11", "w3 w12 w13 w14 w15 w16"]
KINDS = [
    ("soft", "gru", "gumbel"),
    ("soft", "lstm", "gumbel"),
    ("hard", "gru", "gumbel"),
    ("hard", "lstm", "topk"),
    ("none", "gru", "gumbel"),
    ("none", "lstm", "gumbel"),
    ("multihead", None, "gumbel"),
]


def _model(attention, encoder, estimator, seed=0):
    torch.manual_seed(seed)
    config = TextClassifierConfig(
        vocab_size=len(WORDS), classes=3, attention=attention, embed_dim=16, hidden=8,
        attention_dim=8, num_layers=2, num_heads=2, encoder=encoder, hard_estimator=estimator,
    )  # fmt: skip
    return TextClassifier(config).eval()


def _old_forward(model, tokens, mask):
    """``TextClassifier.forward`` before the seam: the BiGRU packed by lengths, the pooling's
    own output."""
    lengths = mask.sum(1)
    x = model.dropout(model.embed(tokens))
    if model.config.attention == "multihead":
        states = model.encoder(x, mask)
    else:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        states, _ = model.encoder(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=tokens.shape[1])
    if model.pool is None:
        weights = mask.to(states.dtype) / lengths[:, None].to(states.dtype)
        pooled = (weights.unsqueeze(1) @ states).squeeze(1)
    else:
        read = model.pool(model.query.expand(tokens.shape[0], -1), states, mask=mask)
        pooled, weights = read.output, read.weights
    return model.head(model.dropout(pooled)), weights, states


def _old_read(model, embeddings, visible, detach=False):
    """``attnkit.interpret.explain._read`` before the seam, verbatim."""
    config = model.config
    x = model.dropout(embeddings)
    if config.attention == "multihead":
        states = model.encoder(x, visible)
    else:
        n = x.shape[1]
        order = (~visible).to(torch.int8).argsort(dim=1, stable=True)
        front = x.gather(1, order[..., None].expand_as(x))
        lengths = visible.sum(1).clamp_min(1)
        packed = pack_padded_sequence(front, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(model.encoder(packed)[0], batch_first=True, total_length=n)
        back = order.argsort(dim=1)[..., None].expand(-1, -1, states.shape[-1])
        states = states.gather(1, back) * visible[..., None]
    if model.pool is None:
        weights = visible.to(states.dtype) / visible.sum(1, keepdim=True).clamp_min(1)
    else:
        weights = model.pool(model.query.expand(x.shape[0], -1), states, mask=visible).weights
    read = weights.detach() if detach else weights
    pooled = (read.unsqueeze(1) @ states).squeeze(1)
    return model.head(model.dropout(pooled)), weights


def _hidden(mask):
    """A mask that hides some real tokens inside each row (not a prefix), and a whole row."""
    visible = mask.clone()
    visible[0, 1] = visible[2, 0] = visible[3, 4] = False
    visible[1] = False  # nothing visible: pools to zero, never NaN
    return visible


@pytest.mark.parametrize(("attention", "encoder", "estimator"), KINDS)
def test_forward_is_forward_embeddings_and_unchanged(attention, encoder, estimator):
    model = _model(attention, encoder, estimator)
    ids, mask, _ = WordTokenizer(WORDS)(TEXTS)
    with torch.no_grad():
        result = model(ids, mask)
        seam = model.forward_embeddings(model.embed(ids), mask)
        logits, weights, states = _old_forward(model, ids, mask)
    for name in ("logits", "weights", "states"):
        assert torch.equal(getattr(result, name), getattr(seam, name)), name
    assert torch.equal(result.logits, logits) and torch.equal(result.weights, weights)
    assert torch.equal(result.states, states)


@pytest.mark.parametrize(("attention", "encoder", "estimator"), KINDS)
@pytest.mark.parametrize("detach", [False, True])
def test_forward_embeddings_and_its_gradients_are_the_old_read(
    attention, encoder, estimator, detach
):
    model = _model(attention, encoder, estimator)
    ids, mask, _ = WordTokenizer(WORDS)(TEXTS)
    visible = _hidden(mask)
    embeddings = model.embed(ids).detach()
    grads, outputs = [], []

    def seam(x):
        result = model.forward_embeddings(x, visible, detach_weights=detach)
        return result.logits, result.weights

    for read in (lambda x: _old_read(model, x, visible, detach), seam):
        inputs = embeddings.clone().requires_grad_()
        logits, weights = read(inputs)
        logits.gather(1, logits.argmax(-1, keepdim=True)).sum().backward()
        grads.append(inputs.grad)
        outputs.append((logits.detach(), weights.detach()))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert torch.equal(grads[0], grads[1])
    assert grads[1].abs().sum() > 0 and torch.isfinite(outputs[1][0]).all()
    assert outputs[1][1][1].eq(0).all()  # the row with nothing visible reads nothing
    if attention != "multihead":  # a recurrent encoder never sees a hidden token
        assert grads[1][~visible].eq(0).all()


def test_forward_embeddings_rejects_wrong_inputs():
    model = _model("soft", "gru", "gumbel")
    with pytest.raises(ValueError, match=r"embeddings must be \(B, T, E=16\), got \(2, 3, 8\)"):
        model.forward_embeddings(torch.zeros(2, 3, 8), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must be a boolean \(B, T\) = \(2, 3\).*int64"):
        model.forward_embeddings(torch.zeros(2, 3, 16), torch.ones(2, 3, dtype=torch.long))


def test_a_hugging_face_classifier_is_read_through_inputs_embeds():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=3,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config).eval()
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 5, 3, 0, 0]])
    mask = ids != 0
    view = model_view(model, tokenizer=None)
    assert isinstance(view, HuggingFaceView) and view.self_attention and view.pooling is None
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask.long()).logits
        logits = view.logits(model.get_input_embeddings()(ids), mask)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    attended = view.attend(model.get_input_embeddings()(ids).detach(), mask)
    assert len(attended.weights) == len(attended.grads) == 2 and attended.readout is None
    assert torch.equal(attended.predicted, expected.argmax(-1))
    assert all(p.grad is None for p in model.parameters())  # the pass leaves .grad alone


def test_model_view_errors_and_views():
    model = _model("multihead", None, "gumbel")
    view = model_view(model, WordTokenizer(WORDS))
    assert isinstance(view, TextClassifierView) and view.self_attention
    assert (view.kind, view.pooling) == ("attnkit", "soft")
    assert model_view(view) is view
    with pytest.raises(TypeError, match="tokenizer must be None when model is a ModelView"):
        model_view(view, WordTokenizer(WORDS))
    with pytest.raises(TypeError, match="got Linear"):
        model_view(torch.nn.Linear(2, 2), None)
    assert model_view(_model("hard", "gru", "gumbel"), None).pooling == "hard"
    assert model_view(_model("none", "gru", "gumbel"), None).pooling == "mean"


@pytest.fixture
def embedding_norm():
    """A method registered for one test: the norm of each token's embedding."""

    @register_method("embedding norm", signed=False)
    def norm(view, batch):
        return batch.embeddings.norm(dim=-1) * batch.mask  # (B, N)

    yield norm
    unregister_method("embedding norm")
    assert "embedding norm" not in METHODS and "embedding norm" not in SIGNED


def test_a_registered_method_is_explained_and_judged(embedding_norm):
    model = _model("multihead", None, "gumbel")
    tokenizer = WordTokenizer(WORDS)
    calls = []
    result = explain(model, tokenizer, TEXTS, steps=4, progress=lambda *a: calls.append(a))
    builtin = ["attention pooling", "rollout", "relevance", "gradient x input"]
    builtin += ["integrated gradients", REFERENCE]
    assert list(result.scores) == [*builtin[:-1], "embedding norm", REFERENCE]
    steps = [*STEPS[:3], "embedding norm", *STEPS[3:]]
    assert calls == [(s, i, len(steps)) for i, s in enumerate(steps)] + [("done", 6, 6)]
    ids, mask, _ = tokenizer(TEXTS)
    expected = model.embed(ids).detach().norm(dim=-1) * mask
    assert torch.equal(result.scores["embedding norm"], expected)
    for verdicts, convention in (
        (result.verdicts, "magnitude"),
        (result.signed_verdicts, "signed"),
    ):
        verdict = next(v for v in verdicts if v.method == "embedding norm")
        agreement = rank_agreement(expected, result.scores[REFERENCE], mask, convention)
        assert verdict.n == len(TEXTS) and verdict.reference == REFERENCE
        assert verdict.tau == pytest.approx(agreement.mean_tau, abs=1e-12)
        assert verdict.signed is False
    assert is_signed("embedding norm") is False and embedding_norm.signed is False
    # the built-in methods' numbers do not depend on what else runs
    alone = explain(model, tokenizer, TEXTS, steps=4, methods=["rollout", "embedding norm"])
    assert list(alone.scores) == ["rollout", "embedding norm", REFERENCE]
    for name in alone.scores:
        assert torch.equal(alone.scores[name], result.scores[name]), name
    assert [v.method for v in alone.verdicts] == ["rollout", "embedding norm"]
    assert alone.verdicts[0] == next(v for v in result.verdicts if v.method == "rollout")


def test_method_names_and_registration_errors(embedding_norm):
    model = _model("soft", "gru", "gumbel")
    tokenizer = WordTokenizer(WORDS)
    with pytest.raises(ValueError, match=r"registered explanation methods \[.*'rollout'.*"):
        explain(model, tokenizer, TEXTS, methods=["rolout"])
    with pytest.raises(ValueError, match="got unknown \\['rolout'\\]"):
        explain(model, tokenizer, TEXTS, methods=["rolout"])
    with pytest.raises(ValueError, match=r"\['rollout'\] do not apply to this attnkit model"):
        explain(model, tokenizer, TEXTS, methods=["rollout"])
    with pytest.raises(ValueError, match="list of method names, got the string"):
        explain(model, tokenizer, TEXTS, methods="rollout")
    with pytest.raises(ValueError, match="already a registered explanation method"):
        register_method("embedding norm", lambda view, batch: batch.mask, signed=False)
    with pytest.raises(ValueError, match="got 'nothing'"):
        unregister_method("nothing")

    @register_method("wrong shape", signed=True)
    def wrong(view, batch):
        return batch.mask[:, :2].float()

    try:
        with pytest.raises(
            ValueError, match=r"'wrong shape' must return scores \(B, N\) = \(4, 6\)"
        ):
            explain(model, tokenizer, TEXTS, methods=["wrong shape"])
    finally:
        unregister_method("wrong shape")


def test_a_user_view_is_explained():
    """A classifier of another kind: a ModelView subclass over a TextClassifier's seam."""
    model = _model("soft", "gru", "gumbel")
    tokenizer = WordTokenizer(WORDS)

    class Mine(TextClassifierView):
        kind = "mine"

    result = explain(Mine(model, tokenizer), None, TEXTS, steps=4)
    reference = explain(model, tokenizer, TEXTS, steps=4)
    assert list(result.scores) == list(reference.scores)
    for name, scores in result.scores.items():
        assert torch.equal(scores, reference.scores[name]), name
    assert issubclass(Mine, ModelView)
