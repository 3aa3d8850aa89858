"""``explain()``: every explanation of a text classifier's prediction, judged, in one call.

The classifier is read through one interface, its
:class:`~attnkit.interpret.classifier_views.ModelView` (token embeddings in, logits out, and one
recorded pass with its attention): a Hugging Face sequence classifier through ``inputs_embeds``,
an attnkit :class:`~attnkit.models.text.TextClassifier` through its ``forward_embeddings``
(:func:`attnkit.interpret.loading.load_explainable` loads either). The methods are the
registered ones (:mod:`attnkit.interpret.methods`; a user adds one with
:func:`~attnkit.interpret.methods.register_method`):

- for a Hugging Face classifier (BERT family: the class is read from the first token): raw
  last-layer attention of the first token, rollout (Abnar & Zuidema 2020) and gradient-weighted
  relevance (Chefer et al. 2021), all captured with :func:`attnkit.capture`;
- for an attnkit :class:`~attnkit.models.text.TextClassifier`, which reads its tokens through an
  attention pooling: the pooling weights themselves (``"soft"``; the tokens read, for ``"hard"``;
  nothing for the ``"none"`` mean), and for the transformer encoder (``"multihead"``) rollout and
  relevance carried through the pooling: ``w R`` with ``w`` the pooling weights and ``R`` the
  encoder's rollout, and ``(w ⊙ ∇w)⁺ R`` with Chefer's relevance ``R``.

For both, from the output's behaviour: gradient × input, integrated gradients and leave-one-out;
verdicts, each method against leave-one-out (:func:`attnkit.interpret.judge`), with τ over
magnitudes (``verdicts``) and signed (``signed_verdicts``), each with its ``n`` and bootstrap
intervals over the texts (a handful of texts gives "no verdict"); and a self-contained HTML
report that shows the pooled verdicts beside the shown text's own numbers. A hidden token
(leave-one-out, ERASER) is masked from attention, or for the BiGRU removed from the sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from attnkit.interpret.classifier_views import ModelView, model_view
from attnkit.interpret.faithfulness import CONVENTIONS
from attnkit.interpret.methods import (
    METHODS,
    REFERENCE,
    Batch,
    ExplanationMethod,
    resolve_methods,
)
from attnkit.interpret.report import render_report, save_figures
from attnkit.interpret.verdicts import MethodVerdict, judge

__all__ = ["STEPS", "Explanation", "Progress", "explain"]

Progress = Callable[[str, int, int], None]  # (step starting, steps done, steps in all)
STEPS = (
    "attention",
    *(m.name for m in METHODS.values() if not m.reads_attention and m.name != REFERENCE),
    REFERENCE,
    "verdicts",
)
"""The progress steps of :func:`explain` with the built-in methods: the attention pass (and the
methods that read it), each method that runs the model, leave-one-out, the verdicts."""


@dataclass(frozen=True)
class Explanation:
    """Token scores per method ``{method: (B, N)}``, verdicts, and what they explain."""

    tokens: list[list[str]]
    mask: Tensor  # (B, N) real tokens
    predicted: Tensor  # (B,) the class explained
    scores: dict[str, Tensor]
    verdicts: list[MethodVerdict]  # τ over magnitudes (the default convention); n = B
    weights: dict[str, Tensor]  # {layer: (B, H, N, N)}; empty for a model without self-attention
    signed_verdicts: list[MethodVerdict] = field(default_factory=list)  # the same, signed τ

    def _example(self, example: int):
        keep = self.mask[example]
        scores = {name: value[example][keep] for name, value in self.scores.items()}
        weights = {
            layer: value[example][:, keep][:, :, keep] for layer, value in self.weights.items()
        }
        tokens = [t for t, k in zip(self.tokens[example], keep.tolist(), strict=True) if k]
        return tokens, scores, weights

    def report(self, example: int = 0, title: str = "attnkit explanation") -> str:
        """The HTML report for one example (padding dropped)."""
        tokens, scores, weights = self._example(example)
        return render_report(
            tokens,
            scores,
            self.verdicts,
            weights,
            title=title,
            signed_verdicts=self.signed_verdicts,
            example=example,
        )

    def save_figures(self, directory: str | Path, example: int = 0) -> list[Path]:
        """Every figure of :meth:`report` as PNG and SVG files (:func:`save_figures`)."""
        tokens, scores, weights = self._example(example)
        return save_figures(weights, directory, scores, tokens)

    def _repr_html_(self) -> str:
        """The notebook view (:func:`attnkit.views.explanation_view`)."""
        from attnkit.views import explanation_view

        return explanation_view(self).html


def explain(
    model: nn.Module | ModelView,
    tokenizer,
    texts: Sequence[str],
    steps: int = 32,
    progress: Progress | None = None,
    methods: Sequence[str] | None = None,
) -> Explanation:
    """Explain a text classifier's predictions on ``texts``.

    Args:
        model: a Hugging Face ``AutoModelForSequenceClassification`` (sdpa or eager), an
            attnkit :class:`~attnkit.models.text.TextClassifier`, or a
            :class:`~attnkit.interpret.classifier_views.ModelView` of another classifier.
        tokenizer: the Hugging Face model's tokenizer, or the attnkit model's
            :class:`~attnkit.interpret.loading.WordTokenizer` (``None`` for a ``ModelView``).
        texts: the inputs; their predicted classes are explained.
        steps: integrated-gradients steps.
        progress: called as ``progress(step, done, total)`` when each step starts (for the
            built-in methods, the :data:`STEPS`: the attention pass and the methods reading it,
            then each method that runs the model, then the verdicts), and as
            ``progress("done", total, total)`` at the end.
        methods: names of registered explanation methods
            (:data:`attnkit.interpret.methods.METHODS`); ``None``: every registered one that
            applies to the model, in registration order. Leave-one-out, the verdicts'
            reference, always runs.

    Returns:
        :class:`Explanation`: ``scores`` ``{method: (B, N)}`` in running order, leave-one-out
        last; a verdict per other method in each convention.

    Raises:
        ValueError: ``texts`` is empty or a string; an unknown method name (the known ones are
            listed) or one that does not apply to the model.

    Example::

        result = explain(model, tokenizer, ["the film was wonderful"], methods=["rollout"])
        result.scores["rollout"], result.verdicts[0].trusted
    """
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    view = model_view(model, tokenizer)
    chosen = resolve_methods(view, methods)
    running = [m for m in chosen if not m.reads_attention]
    names = ("attention", *(m.name for m in running), REFERENCE, "verdicts")
    report = progress if progress is not None else (lambda step, done, total: None)
    view.model.eval()
    report(names[0], 0, len(names))
    embeddings, mask, tokens = view.encode(texts)
    batch = Batch(tokens, embeddings, mask, view.attend(embeddings, mask), steps)
    scores = {m.name: _run(m, view, batch) for m in chosen if m.reads_attention}
    for done, method in enumerate(running, start=1):
        report(method.name, done, len(names))
        scores[method.name] = _run(method, view, batch)
    report(REFERENCE, len(names) - 2, len(names))
    reference = _run(METHODS[REFERENCE], view, batch)
    report(names[-1], len(names) - 1, len(names))
    predicted = batch.predicted
    with torch.no_grad():
        verdicts = {
            convention: judge(
                view.logits,
                embeddings,
                mask,
                predicted,
                scores,
                (REFERENCE, reference),
                convention=convention,
            )
            for convention in CONVENTIONS
        }
    scores[REFERENCE] = reference
    report("done", len(names), len(names))
    return Explanation(
        tokens,
        mask,
        predicted,
        scores,
        verdicts["magnitude"],
        batch.attended.weights,
        verdicts["signed"],
    )


def _run(method: ExplanationMethod, view: ModelView, batch: Batch) -> Tensor:
    """``method``'s scores ``(B, N)``, checked: a wrong shape is an error, not a wrong verdict."""
    with torch.enable_grad() if method.gradients else torch.no_grad():
        scores = method(view, batch)
    if not isinstance(scores, Tensor) or scores.shape != batch.mask.shape:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(
            f"explanation method {method.name!r} must return scores (B, N) = "
            f"{tuple(batch.mask.shape)}, got {shape}"
        )
    return scores.detach()
