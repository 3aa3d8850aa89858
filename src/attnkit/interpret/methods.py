"""The registry of explanation methods that :func:`attnkit.interpret.explain` runs.

Every method has one signature, ``method(view, batch) -> scores (B, N)``: ``view`` is the
:class:`~attnkit.interpret.classifier_views.ModelView` of the classifier, ``batch`` the
:class:`Batch` being explained; the scores are per token, zero on padding, larger meaning more
important for the predicted class. An entry also says whether its scores carry a sign (it is
recorded in :data:`attnkit.interpret.attribution.SIGNED`, which the verdicts read), whether it
needs autograd, whether it only reads the attention pass, and to which models it applies.

Built in, in the order :func:`explain` runs them:

- ``"attention pooling"``: an attnkit classifier's soft pooling weights (Bahdanau et al. 2015);
- ``"hard attention"``: the tokens its hard attention pooling reads (k-hot);
- ``"last-layer attention"``: a Hugging Face classifier's last-layer attention of the first
  token, mean over heads;
- ``"rollout"``: attention rollout (Abnar & Zuidema 2020), read out at the first token or
  through the pooling weights (``w R``);
- ``"relevance"``: gradient-weighted relevance (Chefer et al. 2021), read out at the first
  token or through the positive gradient-weighted pooling weights (``(w ⊙ ∇w)⁺ R``);
- ``"gradient x input"`` (Shrikumar et al. 2016), ``"integrated gradients"`` (Sundararajan et
  al. 2017) and ``"leave-one-out"`` (Li et al. 2016), from the output's behaviour
  (:mod:`attnkit.interpret.attribution`); leave-one-out is also the reference of the verdicts.

Adding one::

    from attnkit.interpret import explain, register_method

    @register_method("uniform", signed=False)
    def uniform(view, batch):
        return batch.mask / batch.mask.sum(1, keepdim=True)  # (B, N)

    explain(model, tokenizer, texts)  # its scores and verdicts come with the built-in ones
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from attnkit.interpret.attention_rollout import rollout
from attnkit.interpret.attribution import (
    SIGNED,
    gradient_x_input,
    integrated_gradients,
    leave_one_out,
)
from attnkit.interpret.classifier_views import Attended, ModelView
from attnkit.interpret.relevance_maps import relevance

__all__ = [
    "METHODS",
    "REFERENCE",
    "Batch",
    "ExplanationMethod",
    "register_method",
    "resolve_methods",
    "unregister_method",
]

REFERENCE = "leave-one-out"
"""The method every other one is judged against (always run, last)."""


@dataclass(frozen=True)
class Batch:
    """The texts being explained, as every method receives them.

    Attributes:
        tokens: ``(B, N)`` the token texts, padding included.
        embeddings: ``(B, N, E)`` detached token embeddings.
        mask: ``(B, N)`` bool, ``True`` on real tokens.
        attended: the recorded pass (:class:`~attnkit.interpret.classifier_views.Attended`).
        steps: integrated-gradients steps.
    """

    tokens: list[list[str]]
    embeddings: Tensor
    mask: Tensor
    attended: Attended
    steps: int = 32

    @property
    def predicted(self) -> Tensor:
        """``(B,)`` the classes explained."""
        return self.attended.predicted


Method = Callable[[ModelView, Batch], Tensor]


def _always(view: ModelView) -> bool:
    return True


@dataclass(frozen=True)
class ExplanationMethod:
    """A registered method: ``method(view, batch) -> (B, N)`` and what :func:`explain` needs to
    know to run it.

    Attributes:
        name: its key in the Explanation's ``scores`` and verdicts.
        compute: the function.
        gradients: it needs autograd (run under ``torch.enable_grad()``, else ``no_grad``).
        reads_attention: it only reads ``batch.attended`` (run in the ``"attention"`` step);
            otherwise it runs the model and is a progress step of its own.
        applies: whether it can explain a given view's model.
    """

    name: str
    compute: Method
    gradients: bool = False
    reads_attention: bool = False
    applies: Callable[[ModelView], bool] = _always

    @property
    def signed(self) -> bool:
        """Whether its scores carry a sign (:data:`attnkit.interpret.attribution.SIGNED`)."""
        return SIGNED[self.name]

    def __call__(self, view: ModelView, batch: Batch) -> Tensor:
        return self.compute(view, batch)


METHODS: dict[str, ExplanationMethod] = {}
"""Every registered method by name, in registration (= running) order."""


def register_method(
    name: str,
    compute: Method | None = None,
    *,
    signed: bool,
    gradients: bool = False,
    reads_attention: bool = False,
    applies: Callable[[ModelView], bool] | None = None,
    replace: bool = False,
):
    """Register an explanation method; usable as a decorator (without ``compute``).

    Args:
        name: the method's name (its key in ``Explanation.scores``).
        compute: ``compute(view, batch) -> (B, N)`` token scores, zero on padding.
        signed: whether a score can be negative (a token pushing away from the class); unsigned
            scores are compared by magnitude only.
        gradients: ``compute`` needs autograd.
        reads_attention: ``compute`` only reads ``batch.attended``.
        applies: ``applies(view) -> bool``, the models it can explain (default: all).
        replace: allow replacing a method of the same name.

    Returns:
        The :class:`ExplanationMethod` (the decorator form returns it too).

    Raises:
        ValueError: ``name`` is already registered and ``replace`` is False.
    """

    def add(function: Method) -> ExplanationMethod:
        if name in METHODS and not replace:
            raise ValueError(
                f"name {name!r} is already a registered explanation method; pass replace=True "
                "to replace it"
            )
        method = ExplanationMethod(
            name, function, gradients, reads_attention, applies if applies else _always
        )
        METHODS[name] = method
        SIGNED[name] = bool(signed)
        return method

    return add(compute) if compute is not None else add


def unregister_method(name: str) -> ExplanationMethod:
    """Remove a registered method (and its sign); returns it.

    Raises:
        ValueError: ``name`` is not registered.
    """
    if name not in METHODS:
        raise ValueError(
            f"name must be a registered explanation method {list(METHODS)}, got {name!r}"
        )
    SIGNED.pop(name, None)
    return METHODS.pop(name)


def resolve_methods(view: ModelView, methods: Sequence[str] | None) -> list[ExplanationMethod]:
    """The methods to run on ``view``'s model, in registration order, without the reference
    (:data:`REFERENCE`, which :func:`explain` runs last): every registered one that applies for
    ``None``, else those named.

    Raises:
        ValueError: an unknown name (the known ones are listed), or a method that does not apply
            to this model.
    """
    if methods is None:
        return [m for m in METHODS.values() if m.name != REFERENCE and m.applies(view)]
    if isinstance(methods, str):
        raise ValueError(f"methods must be a list of method names, got the string {methods!r}")
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise ValueError(
            f"methods must be registered explanation methods {list(METHODS)}, got unknown {unknown}"
        )
    wrong = [name for name in methods if not METHODS[name].applies(view)]
    if wrong:
        possible = [m.name for m in METHODS.values() if m.applies(view)]
        raise ValueError(
            f"methods {wrong} do not apply to this {view.kind} model (pooling {view.pooling!r}, "
            f"self-attention {view.self_attention}); those that do: {possible}"
        )
    chosen = set(methods) - {REFERENCE}
    return [m for m in METHODS.values() if m.name in chosen]


def _first_or_through(maps: Tensor, readout: Tensor | None) -> Tensor:
    """``(B, N)``: row 0 of ``maps (B, N, N)``, or ``readout (B, N) @ maps``."""
    if readout is None:
        return maps[:, 0]
    return (readout[:, None, :] @ maps)[:, 0]  # (B, N)


def pooling_weights(view: ModelView, batch: Batch) -> Tensor:
    """The pooling's weights ``(B, N)``: soft attention pooling (Bahdanau et al. 2015; Yang et
    al. 2016), or the k-hot tokens a hard attention pooling reads (Xu et al. 2015)."""
    return batch.attended.readout * batch.mask


register_method(  # softmax weights: >= 0
    "attention pooling", pooling_weights, signed=False, reads_attention=True,
    applies=lambda view: view.pooling == "soft",
)  # fmt: skip
register_method(  # k-hot
    "hard attention", pooling_weights, signed=False, reads_attention=True,
    applies=lambda view: view.pooling == "hard",
)  # fmt: skip


@register_method(
    "last-layer attention",
    signed=False,
    reads_attention=True,
    applies=lambda view: view.self_attention and view.pooling is None,
)
def last_layer_attention(view: ModelView, batch: Batch) -> Tensor:
    """The last layer's attention of the first token, mean over heads ``(B, N)``."""
    last = list(batch.attended.weights.values())[-1]  # (B, H, N, N)
    return last.mean(1)[:, 0] * batch.mask


@register_method(
    "rollout",
    signed=False,  # products of row-stochastic matrices
    reads_attention=True,
    applies=lambda view: view.self_attention,
)
def attention_rollout(view: ModelView, batch: Batch) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020) read out at the first token, or through the
    pooling weights ``w R``: ``(B, N)``."""
    attended = batch.attended
    return _first_or_through(rollout(attended.weights), attended.readout) * batch.mask


@register_method(
    "relevance",
    signed=False,  # Chefer et al. keep the positive part
    reads_attention=True,
    applies=lambda view: view.self_attention,
)
def gradient_weighted_relevance(view: ModelView, batch: Batch) -> Tensor:
    """Chefer et al. (2021)'s relevance ``R`` read out at the first token, or through the
    positive gradient-weighted pooling weights ``(w ⊙ ∇w)⁺ R``: ``(B, N)``."""
    attended = batch.attended
    read = None
    if attended.readout is not None:
        read = (attended.readout_grad * attended.readout).clamp_min(0)  # (B, N)
    maps = relevance(attended.weights, attended.grads)  # (B, N, N)
    return _first_or_through(maps, read) * batch.mask


@register_method("gradient x input", signed=True, gradients=True)
def _gradient_x_input(view: ModelView, batch: Batch) -> Tensor:
    """:func:`attnkit.interpret.attribution.gradient_x_input` of the predicted class."""
    return gradient_x_input(view.logits, batch.embeddings, batch.mask, batch.predicted)


@register_method("integrated gradients", signed=True, gradients=True)
def _integrated_gradients(view: ModelView, batch: Batch) -> Tensor:
    """:func:`attnkit.interpret.attribution.integrated_gradients`, ``batch.steps`` steps."""
    return integrated_gradients(
        view.logits, batch.embeddings, batch.mask, batch.predicted, batch.steps
    )


@register_method(REFERENCE, signed=True)
def _leave_one_out(view: ModelView, batch: Batch) -> Tensor:
    """:func:`attnkit.interpret.attribution.leave_one_out`: the verdicts' reference."""
    return leave_one_out(view.logits, batch.embeddings, batch.mask, batch.predicted)
