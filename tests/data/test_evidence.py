"""The evidence task: labels are decided by the evidence words alone."""

import pytest
import torch

from attnkit.data import make_evidence_task


def test_evidence_words_decide_the_label():
    task = make_evidence_task(500, length=10, classes=3, evidence_per_example=2, seed=1)
    assert task.tokens.shape == (500, 10) and task.evidence.shape == (500, 10)
    assert task.tokens[:, 0].eq(0).all() and not task.evidence[:, 0].any()
    assert task.evidence.sum(1).eq(2).all()
    words_per_class = 3
    evidence_ids = task.tokens[task.evidence].view(500, 2)
    classes = (evidence_ids - 1) // words_per_class
    assert torch.equal(classes, task.labels[:, None].expand(500, 2))
    filler_ids = task.tokens[~task.evidence][task.tokens[~task.evidence] != 0]
    assert filler_ids.min() >= 1 + 3 * words_per_class  # fillers never collide with evidence
    assert set(task.labels.tolist()) == {0, 1, 2}


def test_seed_and_text():
    a, b = make_evidence_task(20, seed=3), make_evidence_task(20, seed=3)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.tokens, make_evidence_task(20, seed=4).tokens)
    words = a.text(0).split()
    assert words[0] == "[CLS]" and len(words) == 12
    position = int(a.evidence[0].nonzero()[0])
    assert words[position] == f"class{int(a.labels[0])}_word{(int(a.tokens[0, position]) - 1) % 3}"


def test_errors():
    with pytest.raises(ValueError, match="evidence_per_example must be in"):
        make_evidence_task(5, length=4, evidence_per_example=4)
    with pytest.raises(ValueError, match="classes >= 2"):
        make_evidence_task(5, classes=1)
