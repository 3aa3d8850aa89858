"""Hallucination detectors behind one interface, from attention and from the baselines.

Every detector maps the :class:`~attnkit.llm.readout.AnswerSignals` of answers to a
hallucination score per answer (higher = more likely not grounded in the context):

```python
detector = make_detector("lookback lens").fit(signals, labels)  # labels: 1 = hallucinated
scores = detector.predict(signals)  # (N,)
detector.save("detector.json"); same = load_detector("detector.json")
```

``featurize(signals) -> (N, F)`` and ``score(features) -> (N,)`` split :meth:`Detector.predict`
so that guided decoding can score candidates from feature rows (``predict_proba``).
Supervised detectors are a logistic regression on standardised features (the paper's
classifier for the Lookback Lens, a linear probe elsewhere); the others fit at most a head or
layer choice and a sign. Saved as JSON (no pickle). Registered in :data:`DETECTORS` by name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from attnkit._moved import moved_name
from attnkit.llm.readout import AnswerSignals

__all__ = [
    "DETECTORS",
    "RECOMMENDED",
    "Detector",
    "HiddenStateProbe",
    "LLMCheckAttention",
    "LookbackLensDetector",
    "PredictiveEntropy",
    "ReDeEP",
    "RetrievalHeadMass",
    "TokenProbability",
    "answer_score",
    "cross_validated_auroc",
    "load_detector",
    "make_detector",
    "recommended_detector",
]


def _labels(labels: Sequence[int], count: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (count,):
        raise ValueError(f"labels must be ({count},), one per answer, got shape {labels.shape}")
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise ValueError(f"labels must hold both 0 and 1, got {sorted(set(labels.tolist()))}")
    return labels.astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


class Detector:
    """Base class: ``fit``, ``predict``, ``save``, ``load``; subclasses set ``name`` and define
    :meth:`featurize`, and either are logistic (``supervised = True``) or define
    :meth:`_fit` and :meth:`score`."""

    name: ClassVar[str] = ""
    supervised: ClassVar[bool] = True  # a logistic regression on the features
    c: float = 1.0  # inverse L2 strength of the logistic regression

    def __init__(self, **params) -> None:
        self.params = dict(params)
        self.state: dict | None = None
        # what was measured for it (AUROC, interval, n, testbed; "summary" in words), saved with
        # it and shown by attnkit eval's report
        self.evidence: dict = {}

    # --- features ----------------------------------------------------------------------------
    def featurize(self, signals: Sequence[AnswerSignals]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    # --- fit / score -------------------------------------------------------------------------
    def fit(self, signals: Sequence[AnswerSignals], labels: Sequence[int]) -> Detector:
        """Fit on the answers' signals and labels (1 = hallucinated)."""
        labels = _labels(labels, len(signals))
        features = self.featurize(signals)
        self.state = self._fit(features, labels)
        return self

    def _fit(self, features: np.ndarray, labels: np.ndarray) -> dict:
        from sklearn.linear_model import LogisticRegression

        mean, scale = features.mean(0), features.std(0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        model = LogisticRegression(C=self.params.get("c", self.c), max_iter=2000)
        model.fit((features - mean) / scale, labels)
        return {
            "mean": mean.tolist(),
            "scale": scale.tolist(),
            "coef": model.coef_[0].tolist(),
            "intercept": float(model.intercept_[0]),
        }

    def score(self, features: np.ndarray) -> np.ndarray:
        """Hallucination score of each feature row ``(N, F) -> (N,)``; for the logistic
        detectors the log-odds ``w · z + b`` (a probability saturates to exactly 1.0 far from
        the training data, and ties would hide the ranking an AUROC measures)."""
        state = self._state()
        features = np.asarray(features, dtype=np.float64)
        z = (features - np.asarray(state["mean"])) / np.asarray(state["scale"])
        return z @ np.asarray(state["coef"]) + state["intercept"]

    def predict(self, signals: Sequence[AnswerSignals]) -> np.ndarray:
        """Hallucination score of each answer, ``(N,)`` (log-odds for the logistic ones)."""
        return self.score(self.featurize(signals))

    def probability(self, signals: Sequence[AnswerSignals]) -> np.ndarray:
        """Probability of hallucination of each answer, ``(N,)``: the logistic detectors only."""
        if not self.supervised:
            raise ValueError(f"the {self.name} detector's score is not a probability")
        return _sigmoid(self.predict(signals))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Scores of feature rows under the name :func:`~attnkit.llm.guided.guided_generate`
        calls: the probability for the logistic detectors, :meth:`score` for the others."""
        scores = self.score(features)
        return _sigmoid(scores) if self.supervised else scores

    def auroc(self, signals: Sequence[AnswerSignals], labels: Sequence[int]) -> float:
        return _auroc(self.predict(signals), _labels(labels, len(signals)))

    def _state(self) -> dict:
        if self.state is None:
            raise ValueError(f"the {self.name} detector is not fitted: call fit() or load()")
        return self.state

    # --- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write name, parameters, fitted state and evidence as JSON."""
        payload = {"detector": self.name, "params": self.params, "state": self._state(),
                   "evidence": self.evidence}  # fmt: skip
        path = Path(path)
        path.write_text(json.dumps(payload))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """A detector saved by :meth:`save` (any registered class, whichever ``cls``)."""
        return load_detector(path)

    def __repr__(self) -> str:
        fitted = "fitted" if self.state is not None else "not fitted"
        return f"{type(self).__name__}({self.params}, {fitted})"


class _Unsupervised(Detector):
    supervised = False

    def _fit(self, features: np.ndarray, labels: np.ndarray) -> dict:
        return {}

    def score(self, features: np.ndarray) -> np.ndarray:
        self._state()
        return np.asarray(features, dtype=np.float64)[:, 0]


class TokenProbability(_Unsupervised):
    """The model's confidence in its own answer: ``score = -(1/n) Σ_t log p(y_t | y_<t, x)``.

    The baseline every detector must beat (Manakul et al. 2023, "SelfCheckGPT", use it as
    their grey-box baseline; Chuang et al. 2024 report it beside the Lookback Lens). No fitting.
    """

    name = "token probability"

    def featurize(self, signals):
        return np.array([[-float(s.log_prob.mean())] for s in signals])


class PredictiveEntropy(_Unsupervised):
    """Mean entropy of the next-token distribution over the answer,
    ``score = (1/n) Σ_t H(p(· | y_<t, x))`` (Malinin & Gales 2021, "Uncertainty Estimation in
    Autoregressive Structured Prediction"; Kadavath et al. 2022). No fitting."""

    name = "predictive entropy"

    def featurize(self, signals):
        return np.array([[float(s.entropy.mean())] for s in signals])


class HiddenStateProbe(Detector):
    """Logistic probe on the mean hidden state of one layer over the answer (Azaria & Mitchell
    2023, "The Internal State of an LLM Knows When It's Lying" (SAPLMA); CH-Wang et al. 2024):
    ``p = σ(w · x̄^l + b)``, ``x̄^l = (1/n) Σ_t x_t^l``. ``layer`` (default -1, the last) picks
    ``l``. Not an attention signal: the upper bound of what a linear read-out of the residual
    stream gives."""

    name = "hidden-state probe"

    def featurize(self, signals):
        layer = self.params.get("layer", -1)
        return np.stack([s.hidden[layer].double().numpy() for s in signals])


class LookbackLensDetector(Detector):
    """Lookback Lens (Chuang et al. 2024, "Lookback Lens: Detecting and Mitigating Contextual
    Hallucinations in Large Language Models Using Only Attention Maps").

    Per new token ``t`` and head ``(l, h)``, the lookback ratio
    ``LR_t^{l,h} = A_ctx / (A_ctx + A_new)`` (mean weight on the context over mean weight on the
    tokens generated so far); the features are its mean over the answer (``window=None``, the
    span feature) or over each sliding window of ``window`` tokens, ``v = [LR̄^{1,1}, ...,
    LR̄^{L,H}]``, and the detector is ``p = σ(w · v + b)``. With a window, training rows are the
    windows (labelled as their answer) and an answer's score is the largest of its windows'.
    The features are those of :mod:`attnkit.llm.lookback_lens`, whose :class:`LookbackLens
    <attnkit.llm.lookback_lens.LookbackLens>` is the earlier span detector (raw features).
    """

    name = "lookback lens"

    def featurize(self, signals):
        return np.stack([s.lookback_ratio.mean(0).flatten().double().numpy() for s in signals])

    def _windows(self, signals) -> tuple[np.ndarray, np.ndarray]:
        from attnkit.llm.lookback_lens import window_features

        window = self.params["window"]
        rows = [window_features(s.lookback_ratio, window) for s in signals]
        owner = np.concatenate([[i] * len(r) for i, r in enumerate(rows)])
        return np.concatenate(rows), owner

    def fit(self, signals, labels):
        if self.params.get("window") is None:
            return super().fit(signals, labels)
        labels = _labels(labels, len(signals))
        rows, owner = self._windows(signals)
        self.state = self._fit(rows, labels[owner])
        return self

    def predict(self, signals):
        if self.params.get("window") is None:
            return super().predict(signals)
        rows, owner = self._windows(signals)
        scores = self.score(rows)
        return np.array([scores[owner == i].max() for i in range(len(signals))])


class LLMCheckAttention(Detector):
    """LLM-Check's attention score (Sriramanan et al. 2024, "LLM-Check: Investigating Detection
    of Hallucinations in Large Language Models", NeurIPS).

    The log-determinant of a head's causal (lower-triangular) self-attention kernel over the
    response is the sum of the logs of its diagonal: per head,
    ``s^{l,h} = (1/n) Σ_t log a_tt^{l,h}``; the paper's score sums it over the heads of one
    layer, ``S^l = Σ_h s^{l,h}``, the layer chosen on labelled data. :meth:`fit` picks the
    layer and the sign with the largest training AUROC (no other parameter). The diagonal is
    read from the attention weights (``attnkit.capture`` streams no such statistic).
    """

    name = "llm-check attention"
    supervised = False

    def featurize(self, signals):
        return np.stack([s.log_diag.mean(0).sum(-1).double().numpy() for s in signals])  # (N, L)

    def _fit(self, features, labels):
        best = max(
            ((layer, sign) for layer in range(features.shape[1]) for sign in (1.0, -1.0)),
            key=lambda pair: _auroc(pair[1] * features[:, pair[0]], labels),
        )
        return {"layer": best[0], "sign": best[1]}

    def score(self, features):
        state = self._state()
        return state["sign"] * np.asarray(features, dtype=np.float64)[:, state["layer"]]


class ReDeEP(Detector):
    """ReDeEP (Sun et al. 2025, "ReDeEP: Detecting Hallucination in Retrieval-Augmented
    Generation via Mechanistic Interpretability", ICLR).

    External-context score of head ``(l, h)`` at token ``t``:
    ``E_t^{l,h} = cos(x_t^L, mean_{j ∈ top-k} x_j^L)`` over the context tokens the head attends
    to most; parametric-knowledge score of layer ``l``:
    ``P_t^l = JSD(q(x_t^{mid,l}) ‖ q(x_t^{l}))``, ``q = softmax(logit lens)``, before and after
    its MLP. Averaged over the answer, the paper's score is
    ``H = α Σ_{l ∈ F} P̄^l - β Σ_{(l,h) ∈ A} Ē^{l,h}`` over selected copying heads ``A`` and
    knowledge FFNs ``F``; here the weights of every head and layer are one logistic regression
    (``parts="both"``, the paper's regression), or only the external-context (``"ecs"``) or the
    parametric-knowledge (``"pks"``) part.
    """

    name = "redeep"

    def featurize(self, signals):
        parts = self.params.get("parts", "both")
        rows = []
        for s in signals:
            ecs = s.ecs.mean(0).flatten().double().numpy()
            pks = s.pks.mean(0).double().numpy()
            rows.append({"ecs": ecs, "pks": pks, "both": np.concatenate([ecs, pks])}[parts])
        return np.stack(rows)


class RetrievalHeadMass(Detector):
    """Context mass of retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically
    Explains Long-Context Factuality").

    A head's retrieval score is the share of generated tokens it copies from the context (its
    largest weight lies on a context token equal to the token generated); :meth:`fit` takes the
    ``heads`` (default 4) heads of highest retrieval score on the *grounded* training answers
    and scores an answer by how little those heads look at the context:
    ``score = -(1/n) Σ_t (1/|R|) Σ_{(l,h) ∈ R} m_t^{l,h}``, ``m`` the (streamed) attention mass
    on the context. No other parameter.
    """

    name = "retrieval-head mass"
    supervised = False

    def featurize(self, signals):
        # (N, 2·L·H): mean context mass per head, then retrieval score per head
        return np.stack([
            np.concatenate([s.context_mass.mean(0).flatten().double().numpy(),
                            s.retrieval.float().mean(0).flatten().double().numpy()])
            for s in signals
        ])  # fmt: skip

    def _fit(self, features, labels):
        half = features.shape[1] // 2
        grounded = features[labels == 0, half:].mean(0)
        count = min(self.params.get("heads", 4), half)
        return {"heads": np.argsort(-grounded, kind="stable")[:count].tolist()}

    def score(self, features):
        heads = self._state()["heads"]
        return -np.asarray(features, dtype=np.float64)[:, heads].mean(1)


DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (TokenProbability, PredictiveEntropy, HiddenStateProbe, LookbackLensDetector,
                LLMCheckAttention, ReDeEP, RetrievalHeadMass)
}  # fmt: skip


# What benchmarks/hallucination.py measured (benchmarks/results/hallucination.md; a test keeps
# the two equal): the detector attnkit recommends for contextual hallucination, its parameters,
# and its AUROC [95% bootstrap interval] on answers taken from memory against the context
# (knowledge-conflict testbed, d64 model, 5 seeds; n = hallucinated / grounded answers).
RECOMMENDED: dict = {
    "label": "lookback lens (window 4)",
    "name": "lookback lens",
    "params": {"window": 4},
    "testbed": "conflict d64",
    "failure": "memory against context",
    "auroc": 0.950,
    "low": 0.926,
    "high": 0.970,
    "positives": 66,
    "negatives": 285,
    "token probability": 0.074,
}


def recommended_detector() -> Detector:
    """A new (unfitted) :data:`RECOMMENDED` detector whose ``evidence`` says what was measured
    for it; fit it on labelled answers of your model before use."""
    r = RECOMMENDED
    detector = make_detector(r["name"], **r["params"])
    detector.evidence = {
        **r,
        "summary": (
            f"{r['label']}: AUROC {r['auroc']:.3f} [{r['low']:.3f}, {r['high']:.3f}] on "
            f"{r['failure']} ({r['testbed']}, knowledge-conflict testbed, "
            f"{r['positives']}/{r['negatives']} answers; token probability "
            f"{r['token probability']:.3f}); benchmarks/results/hallucination.md"
        ),
    }
    return detector


def check_trace_detector(detector: object) -> None:
    """Raise unless ``detector`` scores an answer from its generation trace alone (what a
    monitor has): a fitted :class:`LookbackLensDetector` (the recommended one, span or window
    features) or a fitted :class:`~attnkit.llm.lookback_lens.LookbackLens`."""
    from attnkit.llm.lookback_lens import LookbackLens

    if isinstance(detector, LookbackLens):
        return
    if not isinstance(detector, LookbackLensDetector):
        kind = getattr(detector, "name", type(detector).__name__)
        raise ValueError(
            "detector must score a generation from its trace alone (a fitted lookback lens: "
            f"recommended_detector() or LookbackLens), got {kind!r}, which needs the model's "
            "replay of the answer (read_answers)"
        )
    if detector.state is None:
        raise ValueError("detector must be fitted (call fit on labelled answers first)")


def answer_score(detector: object, answer, window: int | None = None) -> float:
    """The hallucination score of one answer: what :class:`~attnkit.llm.checks.DetectorScore`,
    :class:`~attnkit.llm.checks.AnswerDetector` and the monitor's ``detector_score`` record.

    Args:
        detector: a fitted :class:`Detector`: its probability of hallucination when it is
            logistic (``supervised``), else its score (:meth:`Detector.predict`); or a fitted
            :class:`~attnkit.llm.lookback_lens.LookbackLens` (anything with ``predict_proba`` over
            ``(rows, L·H)`` lookback-ratio features): its probability from the span means of
            the answer's lookback ratio or, with ``window``, the largest over its sliding
            windows (Chuang et al. 2024, §3).
        answer: the answer's :class:`~attnkit.llm.readout.AnswerSignals`, or its
            :class:`~attnkit.llm.generation.GenerationTrace` (``lookback_ratio`` ``(n, L, H)``,
            ``n >= 1``), which only a detector :func:`check_trace_detector` accepts can score.
        window: sliding-window length for a ``LookbackLens`` (a :class:`Detector` has its own
            ``window`` parameter).
    """
    if isinstance(detector, Detector):
        if window is not None:
            raise ValueError(
                f"window applies to a LookbackLens; the {detector.name} detector's window is its "
                f"own parameter, got window={window}"
            )
        if not isinstance(answer, AnswerSignals):
            check_trace_detector(detector)
        if detector.supervised:
            return float(detector.probability([answer])[0])
        return float(detector.predict([answer])[0])
    from attnkit.llm.lookback_lens import span_features, window_features

    if not callable(getattr(detector, "predict_proba", None)):
        raise TypeError(
            f"detector must be a fitted Detector or LookbackLens, got {type(detector).__name__}"
        )
    ratio = answer.lookback_ratio
    features = span_features(ratio)[None] if window is None else window_features(ratio, window)
    return float(np.max(detector.predict_proba(features)))


def make_detector(name: str, **params) -> Detector:
    """A new detector by its registered name (:data:`DETECTORS`), with its parameters
    (``window`` for the Lookback Lens, ``parts`` for ReDeEP, ``layer`` for the probe,
    ``heads`` for retrieval-head mass, ``c`` for the logistic ones)."""
    if name not in DETECTORS:
        raise ValueError(f"name must be one of {sorted(DETECTORS)}, got {name!r}")
    return DETECTORS[name](**params)


def load_detector(path: str | Path) -> Detector:
    """A detector saved by :meth:`Detector.save`."""
    payload = json.loads(Path(path).read_text())
    if not isinstance(payload, dict) or payload.get("detector") not in DETECTORS:
        raise ValueError(
            f"path must be a detector saved by Detector.save (one of {sorted(DETECTORS)}), "
            f"got {str(payload)[:80]!r}"
        )
    detector = make_detector(payload["detector"], **payload["params"])
    detector.state = payload["state"]
    detector.evidence = dict(payload.get("evidence") or {})
    return detector


def cross_validated_auroc(
    name: str,
    signals: Sequence[AnswerSignals],
    labels: Sequence[int],
    folds: int = 2,
    seed: int = 0,
    **params,
) -> float:
    """Mean AUROC of the detector ``name`` over stratified ``folds`` (fit on the others)."""
    from sklearn.model_selection import StratifiedKFold

    labels = _labels(labels, len(signals))
    scores = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(labels)), labels):
        detector = make_detector(name, **params).fit([signals[i] for i in train], labels[train])
        scores.append(detector.auroc([signals[i] for i in test], labels[test]))
    return float(np.mean(scores))


def __getattr__(name: str):
    return moved_name(__name__, name)  # trace_score is answer_score
