"""One interface through which :func:`attnkit.interpret.explain` reads every classifier.

A :class:`ModelView` turns texts into token embeddings and computes the logits from embeddings
and a mask of the tokens the model may read: the seam every attribution differentiates through
and leave-one-out hides tokens at. Two views are built in (:func:`model_view` picks one):

- :class:`TextClassifierView`: an attnkit :class:`~attnkit.models.text.TextClassifier` through
  its :meth:`~attnkit.models.text.TextClassifier.forward_embeddings`;
- :class:`HuggingFaceView`: a Hugging Face sequence classifier through ``inputs_embeds``.

A classifier of another kind is explained by subclassing :class:`ModelView`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnkit.interpret.relevance_maps import kept_parameter_grads
from attnkit.recording import capture

__all__ = ["Attended", "HuggingFaceView", "ModelView", "TextClassifierView", "model_view"]


@dataclass(frozen=True)
class Attended:
    """One forward pass of the classifier with its attention recorded and, where there is
    self-attention, the predicted class's logit back-propagated (the pass attention-reading
    explanation methods read).

    Attributes:
        logits: ``(B, C)``; the predicted classes are their argmax.
        weights: ``{layer: (B, H, N, N)}`` self-attention in forward order; empty without.
        grads: the gradients of the predicted logits with respect to ``weights``, same shapes.
        readout: ``(B, N)`` how the classifier reads its token states: its pooling weights, or
            ``None`` where it reads the first token (BERT's ``[CLS]``).
        readout_grad: ``(B, N)`` the gradient of the predicted logits with respect to
            ``readout`` (only where there is self-attention to carry it through), else ``None``.
    """

    logits: Tensor
    weights: dict[str, Tensor] = field(default_factory=dict)
    grads: dict[str, Tensor] = field(default_factory=dict)
    readout: Tensor | None = None
    readout_grad: Tensor | None = None

    @property
    def predicted(self) -> Tensor:
        """``(B,)`` the class explained: the argmax of :attr:`logits`."""
        return self.logits.argmax(-1)


class ModelView(ABC):
    """A classifier seen from its token embeddings.

    Attributes:
        model: the wrapped ``nn.Module``.
        kind: ``"huggingface"``, ``"attnkit"`` or a subclass's own name.
        pooling: how the token states are read: ``"soft"`` (attention pooling weights),
            ``"hard"`` (the tokens a hard attention reads), ``"mean"``, or ``None`` (the first
            token).
        self_attention: whether the encoder has self-attention layers (rollout, relevance).
    """

    model: nn.Module
    kind: str
    pooling: str | None = None
    self_attention: bool = False

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, list[list[str]]]:
        """``(embeddings (B, N, E) detached, mask (B, N) bool, tokens (B, N) as text)``."""

    @abstractmethod
    def logits(self, embeddings: Tensor, mask: Tensor) -> Tensor:
        """``(B, C)`` from ``embeddings (B, N, E)``, reading only the ``True`` tokens of
        ``mask (B, N)`` (any of them, not only a prefix)."""

    @abstractmethod
    def attend(self, embeddings: Tensor, mask: Tensor) -> Attended:
        """The recorded pass (:class:`Attended`); leaves the parameters' ``.grad`` as it was."""


class TextClassifierView(ModelView):
    """An attnkit :class:`~attnkit.models.text.TextClassifier` and its
    :class:`~attnkit.interpret.loading.WordTokenizer`."""

    kind = "attnkit"

    def __init__(self, model: nn.Module, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        attention = model.config.attention
        self.pooling = {"soft": "soft", "multihead": "soft", "hard": "hard", "none": "mean"}[
            attention
        ]
        self.self_attention = attention == "multihead"

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, list[list[str]]]:
        ids, mask, tokens = self.tokenizer(list(texts))
        return self.model.embed(ids).detach(), mask, tokens  # (B, N, E)

    def logits(self, embeddings: Tensor, mask: Tensor) -> Tensor:
        return self.model.forward_embeddings(embeddings, mask).logits

    def attend(self, embeddings: Tensor, mask: Tensor) -> Attended:
        model = self.model
        with kept_parameter_grads(model), torch.enable_grad():
            if not self.self_attention:
                with torch.no_grad():
                    result = model.forward_embeddings(embeddings, mask)
                return Attended(result.logits, readout=result.weights)
            with capture(model, grad=True) as rec:
                result = model.forward_embeddings(embeddings, mask)
                pooling = result.weights  # (B, N)
                pooling.retain_grad()
                predicted = result.logits.argmax(-1)
                result.logits.gather(1, predicted[:, None]).sum().backward()
        return Attended(
            result.logits.detach(), rec.weights, rec.grads, pooling.detach(), pooling.grad
        )


class HuggingFaceView(ModelView):
    """A Hugging Face ``AutoModelForSequenceClassification`` (BERT family: the class is read from
    the first token) and its tokenizer; hidden tokens are masked through ``attention_mask``."""

    kind = "huggingface"
    self_attention = True

    def __init__(self, model: nn.Module, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, list[list[str]]]:
        batch = self.tokenizer(list(texts), return_tensors="pt", padding=True)
        ids = batch["input_ids"]
        embeddings = self.model.get_input_embeddings()(ids).detach()  # (B, N, E)
        tokens = [self.tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]
        return embeddings, batch["attention_mask"].bool(), tokens

    def logits(self, embeddings: Tensor, mask: Tensor) -> Tensor:
        return self.model(inputs_embeds=embeddings, attention_mask=mask.long()).logits

    def attend(self, embeddings: Tensor, mask: Tensor) -> Attended:
        with kept_parameter_grads(self.model), capture(self.model, grad=True) as rec:
            logits = self.logits(embeddings, mask)
            predicted = logits.argmax(-1)
            logits.gather(1, predicted[:, None]).sum().backward()
        return Attended(logits.detach(), rec.weights, rec.grads)


def model_view(model: nn.Module | ModelView, tokenizer=None) -> ModelView:
    """The view :func:`attnkit.interpret.explain` reads ``model`` through: an attnkit
    :class:`~attnkit.models.text.TextClassifier` (with a
    :class:`~attnkit.interpret.loading.WordTokenizer`), a Hugging Face sequence classifier (with
    its tokenizer), or a :class:`ModelView` already (``tokenizer`` must then be ``None``).

    Raises:
        TypeError: ``model`` is none of these, or a view given with a tokenizer.
    """
    from attnkit.models.text import TextClassifier

    if isinstance(model, ModelView):
        if tokenizer is not None:
            raise TypeError("tokenizer must be None when model is a ModelView (it has its own)")
        return model
    if isinstance(model, TextClassifier):
        return TextClassifierView(model, tokenizer)
    if isinstance(model, nn.Module) and hasattr(model, "get_input_embeddings"):
        return HuggingFaceView(model, tokenizer)
    raise TypeError(
        "model must be an attnkit TextClassifier, a Hugging Face sequence classifier or a "
        f"ModelView, got {type(model).__name__}"
    )
