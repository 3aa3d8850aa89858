"""Detectors on synthetic answer signals: planted effects, exact baseline scores, persistence."""

import numpy as np
import pytest
import torch

from attnkit.llm.detection import (
    DETECTORS,
    LLMCheckAttention,
    RetrievalHeadMass,
    TokenProbability,
    load_detector,
    make_detector,
)
from attnkit.llm.readout import AnswerSignals

pytest.importorskip("sklearn")
L, H, D = 2, 3, 8


def fake(rng: np.random.Generator, bad: int, n: int = 5) -> AnswerSignals:
    """An answer of n tokens; a hallucinated one (bad = 1) looks less at the context through
    head (1, 2), has a lower diagonal in layer 0, lower token probability, and so on."""

    def t(*shape):
        return torch.tensor(rng.random(shape), dtype=torch.float32)

    ratio, mass = t(n, L, H), t(n, L, H)
    ratio[:, 1, 2] -= 0.4 * bad
    mass[:, 1, 2] -= 0.4 * bad
    diag = -t(n, L, H)
    diag[:, 0] -= 0.5 * bad
    ecs, pks, hidden = t(n, L, H), t(n, L), t(L, D)
    ecs[:, 0, 0] -= 0.5 * bad
    pks[:, 1] += 0.5 * bad
    hidden[-1, 3] += 1.5 * bad  # one draw, not a mean over tokens: a larger shift
    retrieval = torch.zeros(n, L, H, dtype=torch.bool)
    retrieval[:, 1, 2] = not bad  # the copying head, on grounded answers
    retrieval[:, 0, 1] = True  # copies always: but grounded-only retrieval score decides
    log_prob = -t(n) - bad
    entropy = t(n) + bad
    return AnswerSignals(ratio, retrieval, mass, diag, ecs, pks, log_prob, entropy, hidden)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 40)
    return [fake(rng, int(b)) for b in labels], labels


def test_every_detector_finds_its_planted_effect_and_round_trips(data, tmp_path):
    signals, labels = data
    train, test = slice(0, 40), slice(40, 80)
    variants = [(name, {}) for name in DETECTORS] + [
        ("lookback lens", {"window": 2}), ("redeep", {"parts": "ecs"}),
        ("redeep", {"parts": "pks"}),
    ]  # fmt: skip
    for name, params in variants:
        detector = make_detector(name, **params).fit(signals[train], labels[train])
        assert detector.auroc(signals[test], labels[test]) > 0.9, (name, params)
        detector.evidence = {"summary": "AUROC 1.0", "auroc": 1.0}
        again = load_detector(detector.save(tmp_path / "d.json"))
        assert type(again) is type(detector) and again.params == params
        assert again.evidence == detector.evidence
        np.testing.assert_allclose(again.predict(signals[test]), detector.predict(signals[test]))


def test_unsupervised_scores_are_exact(data):
    signals, labels = data
    scores = TokenProbability().fit(signals, labels).predict(signals)
    np.testing.assert_allclose(scores, [-s.log_prob.mean().item() for s in signals], rtol=1e-6)
    entropy = make_detector("predictive entropy").fit(signals, labels).predict(signals)
    np.testing.assert_allclose(entropy, [s.entropy.mean().item() for s in signals], rtol=1e-6)
    check = LLMCheckAttention().fit(signals, labels)
    assert check.state == {"layer": 0, "sign": -1.0}  # lower diagonal in layer 0 = suspect
    expected = [-s.log_diag.mean(0).sum(-1)[0].item() for s in signals]
    np.testing.assert_allclose(check.predict(signals), expected, rtol=1e-6)
    heads = RetrievalHeadMass(heads=2).fit(signals, labels)
    assert heads.state["heads"][0] in (1 * H + 2, 0 * H + 1)
    assert set(heads.state["heads"]) == {1 * H + 2, 0 * H + 1}  # both copy on grounded answers
    flat = [(-(s.context_mass.mean(0).flatten()[[5, 1]].mean())).item() for s in signals]
    np.testing.assert_allclose(heads.predict(signals), flat, rtol=1e-6)


def test_errors(data, tmp_path):
    signals, labels = data
    with pytest.raises(ValueError, match="name must be one of"):
        make_detector("nope")
    with pytest.raises(ValueError, match="not fitted"):
        make_detector("lookback lens").predict(signals)
    with pytest.raises(ValueError, match="both 0 and 1"):
        make_detector("lookback lens").fit(signals, np.zeros(len(signals)))
    with pytest.raises(ValueError, match="one per answer"):
        make_detector("lookback lens").fit(signals, labels[:3])
    path = tmp_path / "x.json"
    path.write_text('{"coef": []}')
    with pytest.raises(ValueError, match="Detector.save"):
        load_detector(path)


def test_cross_validated_auroc_uses_held_out_folds(data):
    from attnkit.llm.detection import cross_validated_auroc

    signals, labels = data
    assert cross_validated_auroc("lookback lens", signals, labels, seed=0) > 0.9
    # token probability has nothing to fit: its folds average the AUROC of the fixed score
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    scores = np.array([-s.log_prob.mean().item() for s in signals])
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=3).split(scores, labels)
    expected = np.mean([roc_auc_score(labels[t], scores[t]) for _, t in folds])
    assert cross_validated_auroc("token probability", signals, labels, seed=3) == pytest.approx(
        expected
    )


def test_recommended_is_what_the_benchmark_measured():
    """RECOMMENDED copies benchmarks/results/hallucination.json: the best attention detector on
    answers from memory against the context, with its AUROC, interval and n."""
    import json
    from pathlib import Path

    from attnkit.llm.detection import RECOMMENDED, recommended_detector

    results = Path(__file__).parents[2] / "benchmarks" / "results" / "hallucination.json"
    payload = json.loads(results.read_text())
    table = payload["auroc"][RECOMMENDED["testbed"]][RECOMMENDED["failure"]]
    row = table[RECOMMENDED["label"]]
    for key in ("auroc", "low", "high"):
        assert RECOMMENDED[key] == round(row[key], 3)
    assert RECOMMENDED["token probability"] == round(table["token probability"]["auroc"], 3)
    counts = payload["counts"][RECOMMENDED["testbed"]][RECOMMENDED["failure"]]
    assert (RECOMMENDED["positives"], RECOMMENDED["negatives"]) == (
        counts["positives"],
        counts["negatives"],
    )
    baselines = ("token probability", "predictive entropy", "hidden-state probe")
    attention = {k: v["auroc"] for k, v in table.items() if k not in baselines and v}
    assert max(attention, key=attention.get) == RECOMMENDED["label"]
    detector = recommended_detector()
    assert detector.name == RECOMMENDED["name"] and detector.params == RECOMMENDED["params"]
    assert f"{RECOMMENDED['auroc']:.3f}" in detector.evidence["summary"]
