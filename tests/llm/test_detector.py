"""The Lookback Lens detector on features with a planted signal."""

import numpy as np
import pytest
import torch

from attnkit.llm import LookbackLens, span_features, window_features


def _data(n=200, seed=0):
    """Hallucinated answers look less at the context in heads 3 and 7 only."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    features = rng.uniform(0.3, 0.7, (n, 12))
    features[:, [3, 7]] -= 0.25 * labels[:, None]
    return features, labels


def test_detector_finds_the_planted_heads_and_beats_the_mean_baseline():
    features, labels = _data()
    lens = LookbackLens().fit(features[:100], labels[:100])
    assert lens.auroc(features[100:], labels[100:]) > 0.95
    baseline = LookbackLens(mean_baseline=True).cross_validated_auroc(features, labels)
    full = LookbackLens().cross_validated_auroc(features, labels)
    assert full > baseline > 0.5
    weights = np.abs(lens._model.coef_[0])
    assert set(np.argsort(weights)[-2:]) == {3, 7}


def test_save_and_load(tmp_path):
    features, labels = _data()
    lens = LookbackLens(c=0.5).fit(features, labels)
    loaded = LookbackLens.load(lens.save(tmp_path / "lens.json"))
    np.testing.assert_allclose(loaded.predict_proba(features), lens.predict_proba(features))
    assert loaded.c == 0.5 and not loaded.mean_baseline


def test_features():
    ratio = torch.arange(24.0).reshape(4, 2, 3)  # 4 tokens, 2 layers, 3 heads
    np.testing.assert_allclose(span_features(ratio), ratio.mean(0).flatten().numpy())
    windows = window_features(ratio, window=2)
    assert windows.shape == (3, 6)
    np.testing.assert_allclose(windows[0], ratio[:2].mean(0).flatten().numpy())
    assert window_features(ratio, window=8).shape == (1, 6)  # shorter than a window


def test_errors():
    with pytest.raises(ValueError, match="not fitted"):
        LookbackLens().predict_proba(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="both labels"):
        LookbackLens().fit(np.zeros((4, 3)), [1, 1, 1, 1])
    with pytest.raises(ValueError, match="features must be"):
        LookbackLens().fit(np.zeros(4), [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"\(n, L, H\)"):
        span_features(torch.zeros(0, 2, 3))
    with pytest.raises(ValueError, match="window must be positive"):
        window_features(torch.zeros(3, 2, 3), window=0)
