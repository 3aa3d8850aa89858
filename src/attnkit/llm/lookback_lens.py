"""Lookback Lens (Chuang et al. 2024): its features, and the span detector :class:`LookbackLens`.

Features are the lookback ratio of every (layer, head), averaged over a span of new tokens (the
whole answer, :func:`span_features`, or sliding windows, :func:`window_features`); a logistic
regression (scikit-learn) maps them to the probability that the span is *not* grounded in the
context. The "mean over all heads" baseline uses the single feature ``mean LR``.

:class:`LookbackLens` fits on raw feature rows and saves scikit-learn's coefficients; the
Lookback Lens of the detector registry, :class:`attnkit.llm.detection.LookbackLensDetector`
(standardised features, the same interface as the other detectors; the recommended detector),
uses the same features. Both are scored by :func:`attnkit.llm.detection.answer_score`.
(This module was ``attnkit.llm.detector`` until 0.2.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

__all__ = ["LookbackLens", "span_features", "window_features"]


def span_features(lookback_ratio: Tensor) -> np.ndarray:
    """``(n, L, H)`` per-token lookback ratios of one answer → ``(L·H,)`` span means."""
    if lookback_ratio.dim() != 3 or lookback_ratio.shape[0] == 0:
        raise ValueError(
            "lookback_ratio must be (n, L, H) with n >= 1 tokens, "
            f"got {tuple(lookback_ratio.shape)}"
        )
    return lookback_ratio.mean(0).flatten().double().numpy()


def window_features(lookback_ratio: Tensor, window: int = 8) -> np.ndarray:
    """Sliding-window means: ``(max(n - window + 1, 1), L·H)``, one row per window."""
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    steps = lookback_ratio.shape[0]
    size = min(window, steps)
    windows = lookback_ratio.unfold(0, size, 1)  # (W, L, H, size)
    return windows.mean(-1).flatten(1).double().numpy()


@dataclass
class LookbackLens:
    """A logistic-regression detector over lookback-ratio features.

    Attributes:
        mean_baseline: use only the mean lookback ratio over all heads (the paper's baseline).
        c: inverse regularization strength of the logistic regression.
    """

    mean_baseline: bool = False
    c: float = 1.0
    _model: object = field(default=None, repr=False)

    def _prepare(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise ValueError(f"features must be (examples, L·H), got shape {features.shape}")
        return features.mean(1, keepdims=True) if self.mean_baseline else features

    def fit(self, features: np.ndarray, hallucinated: Sequence[int]) -> LookbackLens:
        """Fit on ``(examples, L·H)`` features and labels (1 = not grounded in the context)."""
        from sklearn.linear_model import LogisticRegression

        labels = np.asarray(hallucinated)
        if set(np.unique(labels)) != {0, 1}:
            raise ValueError("hallucinated must hold both labels 0 and 1")
        self._model = LogisticRegression(C=self.c, max_iter=1000).fit(
            self._prepare(features), labels
        )
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probability of hallucination per example, ``(examples,)``."""
        if self._model is None:
            raise ValueError("the detector is not fitted: call fit() or load() first")
        return self._model.predict_proba(self._prepare(features))[:, 1]

    def auroc(self, features: np.ndarray, hallucinated: Sequence[int]) -> float:
        """Area under the ROC curve on held-out examples."""
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(hallucinated, self.predict_proba(features)))

    def cross_validated_auroc(
        self,
        features: np.ndarray,
        hallucinated: Sequence[int],
        folds: int = 2,
        seed: int = 0,
        groups: Sequence[int] | None = None,
    ) -> float:
        """Mean AUROC over stratified ``folds`` (two-fold, as in the paper).

        ``groups`` (one id per row, e.g. the answer a sliding window comes from) keeps the rows
        of a group in one fold (``StratifiedGroupKFold``).
        """
        from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

        features, labels = np.asarray(features), np.asarray(hallucinated)
        if groups is None:
            splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(
                features, labels
            )
        else:
            if len(groups) != len(labels):
                raise ValueError(
                    f"groups must hold one id per row ({len(labels)}), got {len(groups)}"
                )
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            splits = splitter.split(features, labels, np.asarray(groups))
        scores = []
        for train, test in splits:
            detector = LookbackLens(self.mean_baseline, self.c).fit(features[train], labels[train])
            scores.append(detector.auroc(features[test], labels[test]))
        return float(np.mean(scores))

    def save(self, path: str | Path) -> Path:
        """Write the fitted coefficients as JSON (no pickle: safe to load)."""
        if self._model is None:
            raise ValueError("the detector is not fitted: nothing to save")
        payload = {
            "mean_baseline": self.mean_baseline,
            "c": self.c,
            "coef": self._model.coef_.tolist(),
            "intercept": self._model.intercept_.tolist(),
        }
        path = Path(path)
        path.write_text(json.dumps(payload))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LookbackLens:
        """A detector saved by :meth:`save`."""
        from sklearn.linear_model import LogisticRegression

        payload = json.loads(Path(path).read_text())
        model = LogisticRegression(C=payload["c"])
        model.coef_ = np.array(payload["coef"])
        model.intercept_ = np.array(payload["intercept"])
        model.classes_ = np.array([0, 1])
        return cls(payload["mean_baseline"], payload["c"], model)
