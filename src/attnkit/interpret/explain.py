"""``explain()``: every explanation of a text classifier's prediction, judged, in one call.

For a Hugging Face sequence classifier (BERT family: the class is read from the first token):

- from attention: raw last-layer attention of the first token, rollout (Abnar & Zuidema 2020),
  gradient-weighted relevance (Chefer et al. 2021), all captured with :func:`attnkit.capture`;
- from the output's behaviour: gradient × input, integrated gradients and leave-one-out;
- verdicts: each method against leave-one-out (:func:`attnkit.interpret.judge`);
- a self-contained HTML report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnkit.capture import capture
from attnkit.interpret.attribution import gradient_x_input, integrated_gradients, leave_one_out
from attnkit.interpret.relevance import kept_parameter_grads, relevance
from attnkit.interpret.report import render_report
from attnkit.interpret.rollout import rollout
from attnkit.interpret.verdicts import MethodVerdict, judge

__all__ = ["Explanation", "explain"]


@dataclass(frozen=True)
class Explanation:
    """Token scores per method ``{method: (B, N)}``, verdicts, and what they explain."""

    tokens: list[list[str]]
    mask: Tensor  # (B, N) real tokens
    predicted: Tensor  # (B,) the class explained
    scores: dict[str, Tensor]
    verdicts: list[MethodVerdict]
    weights: dict[str, Tensor]  # {layer: (B, H, N, N)}

    def report(self, example: int = 0, title: str = "attnkit explanation") -> str:
        """The HTML report for one example (padding dropped)."""
        keep = self.mask[example]
        scores = {name: value[example][keep] for name, value in self.scores.items()}
        weights = {
            layer: value[example][:, keep][:, :, keep] for layer, value in self.weights.items()
        }
        tokens = [t for t, k in zip(self.tokens[example], keep.tolist(), strict=True) if k]
        return render_report(tokens, scores, self.verdicts, weights, title=title)


def explain(model: nn.Module, tokenizer, texts: Sequence[str], steps: int = 32) -> Explanation:
    """Explain a Hugging Face sequence classifier's predictions on ``texts``.

    Args:
        model: e.g. ``AutoModelForSequenceClassification`` (sdpa or eager).
        tokenizer: its tokenizer.
        texts: the inputs; their predicted classes are explained.
        steps: integrated-gradients steps.
    """
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    model.eval()
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
        "gradient x input": gradient_x_input(forward, embeddings, mask, predicted),
        "integrated gradients": integrated_gradients(forward, embeddings, mask, predicted, steps),
    }
    reference = leave_one_out(forward, embeddings, mask, predicted)
    with torch.no_grad():
        verdicts = judge(forward, embeddings, mask, predicted, scores, ("leave-one-out", reference))
    scores["leave-one-out"] = reference
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in batch["input_ids"].tolist()]
    return Explanation(tokens, mask, predicted, scores, verdicts, weights)
