"""``explain()``: every explanation of a text classifier's prediction, judged, in one call.

Two kinds of classifier (:func:`attnkit.interpret.loading.load_explainable` loads either):

- a Hugging Face sequence classifier (BERT family: the class is read from the first token):
  raw last-layer attention of the first token, rollout (Abnar & Zuidema 2020) and
  gradient-weighted relevance (Chefer et al. 2021), all captured with :func:`attnkit.capture`;
- an attnkit :class:`~attnkit.models.text.TextClassifier`, which reads its tokens through an
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
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkit.interpret.attention_rollout import rollout
from attnkit.interpret.attribution import gradient_x_input, integrated_gradients, leave_one_out
from attnkit.interpret.faithfulness import CONVENTIONS
from attnkit.interpret.relevance_maps import kept_parameter_grads, relevance
from attnkit.interpret.report import render_report, save_figures
from attnkit.interpret.verdicts import MethodVerdict, judge
from attnkit.recording import capture

__all__ = ["STEPS", "Explanation", "Progress", "explain"]

Progress = Callable[[str, int, int], None]  # (step starting, steps done, steps in all)
STEPS = ("attention", "gradient x input", "integrated gradients", "leave-one-out", "verdicts")


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
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    steps: int = 32,
    progress: Progress | None = None,
) -> Explanation:
    """Explain a text classifier's predictions on ``texts``.

    Args:
        model: a Hugging Face ``AutoModelForSequenceClassification`` (sdpa or eager) or an
            attnkit :class:`~attnkit.models.text.TextClassifier`.
        tokenizer: the Hugging Face model's tokenizer, or the attnkit model's
            :class:`~attnkit.interpret.loading.WordTokenizer`.
        texts: the inputs; their predicted classes are explained.
        steps: integrated-gradients steps.
        progress: called as ``progress(step, done, total)`` when each of the :data:`STEPS`
            starts, and as ``progress("done", total, total)`` at the end.
    """
    from attnkit.models.text import TextClassifier

    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    report = progress if progress is not None else (lambda step, done, total: None)
    model.eval()
    report(STEPS[0], 0, len(STEPS))
    if isinstance(model, TextClassifier):
        forward, embeddings, mask, tokens, predicted, scores, weights = _attend_attnkit(
            model, tokenizer, texts
        )
    else:
        forward, embeddings, mask, tokens, predicted, scores, weights = _attend_huggingface(
            model, tokenizer, texts
        )
    report(STEPS[1], 1, len(STEPS))
    scores["gradient x input"] = gradient_x_input(forward, embeddings, mask, predicted)
    report(STEPS[2], 2, len(STEPS))
    scores["integrated gradients"] = integrated_gradients(
        forward, embeddings, mask, predicted, steps
    )
    report(STEPS[3], 3, len(STEPS))
    reference = leave_one_out(forward, embeddings, mask, predicted)
    report(STEPS[4], 4, len(STEPS))
    with torch.no_grad():
        verdicts = {
            convention: judge(
                forward,
                embeddings,
                mask,
                predicted,
                scores,
                ("leave-one-out", reference),
                convention=convention,
            )
            for convention in CONVENTIONS
        }
    scores["leave-one-out"] = reference
    report("done", len(STEPS), len(STEPS))
    return Explanation(
        tokens, mask, predicted, scores, verdicts["magnitude"], weights, verdicts["signed"]
    )


def _attend_huggingface(model: nn.Module, tokenizer, texts: Sequence[str]):
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    mask = batch["attention_mask"].bool()
    embed = model.get_input_embeddings()

    def forward(embeddings: Tensor, visible: Tensor) -> Tensor:
        return model(inputs_embeds=embeddings, attention_mask=visible.long()).logits

    embeddings = embed(batch["input_ids"]).detach()
    with kept_parameter_grads(model), capture(model, grad=True) as rec:
        logits = forward(embeddings, mask)
        predicted = logits.argmax(-1)
        logits.gather(1, predicted[:, None]).sum().backward()
    weights, grads = rec.weights, rec.grads
    last = list(weights.values())[-1]
    scores = {
        "last-layer attention": last.mean(1)[:, 0] * mask,
        "rollout": rollout(weights)[:, 0] * mask,
        "relevance": relevance(weights, grads)[:, 0] * mask,
    }
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in batch["input_ids"].tolist()]
    return forward, embeddings, mask, tokens, predicted, scores, weights


def _read(
    model: nn.Module, embeddings: Tensor, visible: Tensor, detach: bool = False
) -> tuple[Tensor, Tensor]:
    """A TextClassifier's ``(logits (B, C), pooling weights (B, N))`` from its token embeddings
    ``(B, N, E)``, reading only the ``visible (B, N)`` tokens (any of them, not only a prefix).
    ``detach``: no gradient flows through the pooling weights (Jain & Wallace 2019, §4.1)."""
    config = model.config
    x = model.dropout(embeddings)  # (B, N, E)
    if config.attention == "multihead":
        states = model.encoder(x, visible)  # (B, N, E)
    else:  # packing needs a prefix: move the visible tokens to the front, in order, and back
        n = x.shape[1]
        order = (~visible).to(torch.int8).argsort(dim=1, stable=True)  # (B, N)
        front = x.gather(1, order[..., None].expand_as(x))  # (B, N, E)
        lengths = visible.sum(1).clamp_min(1)  # a row with nothing visible pools to zero below
        packed = pack_padded_sequence(front, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(model.encoder(packed)[0], batch_first=True, total_length=n)
        back = order.argsort(dim=1)[..., None].expand(-1, -1, states.shape[-1])
        states = states.gather(1, back) * visible[..., None]  # (B, N, 2H)
    if model.pool is None:
        weights = visible.to(states.dtype) / visible.sum(1, keepdim=True).clamp_min(1)  # (B, N)
    else:
        weights = model.pool(model.query.expand(x.shape[0], -1), states, mask=visible).weights
    # the pooling's own output, read through the returned weights so that they get a gradient
    read = weights.detach() if detach else weights
    pooled = (read.unsqueeze(1) @ states).squeeze(1)  # (B, D)
    return model.head(model.dropout(pooled)), weights


def _attend_attnkit(model: nn.Module, tokenizer, texts: Sequence[str]):
    ids, mask, tokens = tokenizer(list(texts))
    embeddings = model.embed(ids).detach()  # (B, N, E)

    def forward(inputs: Tensor, visible: Tensor) -> Tensor:
        return _read(model, inputs, visible)[0]

    attention = model.config.attention
    scores: dict[str, Tensor] = {}
    weights: dict[str, Tensor] = {}
    with kept_parameter_grads(model), torch.enable_grad():
        if attention == "multihead":
            with capture(model, grad=True) as rec:
                logits, pooling = _read(model, embeddings, mask)
                pooling.retain_grad()
                predicted = logits.argmax(-1)
                logits.gather(1, predicted[:, None]).sum().backward()
            weights = rec.weights
            read = pooling.detach()[:, None, :]  # (B, 1, N)
            gradient_weighted = (pooling.grad * pooling.detach()).clamp_min(0)[:, None, :]
            scores["attention pooling"] = pooling.detach() * mask
            scores["rollout"] = (read @ rollout(weights))[:, 0] * mask
            scores["relevance"] = (gradient_weighted @ relevance(weights, rec.grads))[:, 0] * mask
        else:
            with torch.no_grad():
                logits, pooling = _read(model, embeddings, mask)
            predicted = logits.argmax(-1)
            if attention != "none":  # the mean's uniform weights explain nothing
                name = "attention pooling" if attention == "soft" else "hard attention"
                scores[name] = pooling * mask
    return forward, embeddings, mask, tokens, predicted, scores, weights
