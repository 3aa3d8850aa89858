"""Hard attention: each query reads exactly ``k`` keys, chosen by a trainable selector.

Three gradient estimators sit behind a name registry (:data:`ESTIMATORS`):

- ``"reinforce"``: sample ``k`` keys from ``softmax(scores / temperature)`` and train the
  scorer with the score-function (REINFORCE) gradient of ``out.log_prob`` (Williams 1992), with a
  moving-average baseline and an entropy bonus as in Xu et al. 2015 ("Show, Attend and Tell");
  see :mod:`attnkit.attention.hard_training` for the loss and the baseline.
- ``"gumbel"``: Gumbel-max sample in the forward pass, the gradient of the Gumbel-softmax
  relaxation at the same noise in the backward pass (straight-through, Jang et al. 2017);
  :func:`attnkit.attention.hard_training.anneal_temperature` gives the temperature schedule.
- ``"topk"``: deterministic top-``k`` in the forward pass, the gradient of
  ``softmax(scores / temperature)`` in the backward pass (straight-through, Bengio et al. 2013).

Sampling ``k > 1`` keys without replacement uses the Gumbel-top-k trick (Kool et al. 2019).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.attention.functional import memory_inputs, prepare_mask, softmax
from attnkit.attention.output import AttentionOutput
from attnkit.attention.scores import make_score

__all__ = [
    "ESTIMATORS",
    "GumbelStraightThrough",
    "HardAttention",
    "HardEstimator",
    "Reinforce",
    "TopKStraightThrough",
    "k_hot",
    "sample_gumbel",
    "selection_log_prob",
]


# ----------------------------------------------------------------------------- pure functions


def sample_gumbel(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard Gumbel noise ``-log(-log(U))``, ``U ~ Uniform(0, 1)``, of the given shape.

    ``argmax(logits + noise)`` is a sample from ``softmax(logits)`` (the Gumbel-max trick), and
    the ``k`` largest entries are ``k`` draws without replacement (Kool et al. 2019).
    """
    uniform = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    return -torch.log(-torch.log(uniform.clamp(tiny, 1.0 - torch.finfo(dtype).eps)))


def _masked(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Scores with masked keys pushed to the lowest finite value, so they rank last."""
    if mask is None:
        return scores
    return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)


def k_hot(indices: Tensor, num_keys: int, valid: Tensor | None = None) -> Tensor:
    """Weights ``1/m`` on the ``m`` valid selected keys of each row, zero elsewhere.

    Args:
        indices: ``(..., k)`` selected key positions.
        num_keys: ``K``.
        valid: ``(..., k)`` boolean, ``False`` for a selection to drop (a masked key picked only
            because its row has fewer than ``k`` allowed keys); ``None`` keeps all.

    Returns:
        ``(..., K)``: exactly one-hot for ``k = 1``; rows with no valid selection are zeros.
    """
    keep = torch.ones_like(indices, dtype=torch.bool) if valid is None else valid
    hot = torch.zeros(*indices.shape[:-1], num_keys, dtype=torch.float32, device=indices.device)
    hot = hot.scatter(-1, indices, keep.float())  # (..., K)
    return hot / hot.sum(-1, keepdim=True).clamp(min=1.0)


def selection_log_prob(logits: Tensor, indices: Tensor, valid: Tensor) -> Tensor:
    """Log-probability of drawing ``indices`` in this order, without replacement, from
    ``softmax(logits)``: ``sum_i [logits[s_i] - logsumexp(logits without s_1..s_{i-1})]``.

    This is the probability of the ordered Gumbel-top-k sample (Kool et al. 2019); its gradient
    is a valid score-function estimator for any reward of the selected set. For ``k = 1`` it is
    ``log_softmax(logits)[s_1]``.

    Args:
        logits: ``(..., K)``, masked keys already at the lowest finite value.
        indices: ``(..., k)``.
        valid: ``(..., k)`` boolean; invalid selections add nothing.

    Returns:
        ``(...)``.
    """
    lowest = torch.finfo(logits.dtype).min
    remaining = logits
    total = logits.new_zeros(logits.shape[:-1])
    for i in range(indices.shape[-1]):
        index = indices[..., i : i + 1]  # (..., 1)
        step = remaining.log_softmax(-1).gather(-1, index).squeeze(-1)  # (...)
        total = total + torch.where(valid[..., i], step, 0.0)
        remaining = remaining.scatter(-1, index, lowest)
    return total


def _entropy(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Entropy of ``softmax(logits)`` over the allowed keys, ``(...)``; 0 for an empty row."""
    log_p = logits.log_softmax(-1)
    p = log_p.exp()
    if mask is not None:
        p = p * mask
    return -(p * log_p).sum(-1)


# ----------------------------------------------------------------------------- estimators


class HardEstimator:
    """How keys are chosen in the forward pass and how gradients reach the scores.

    Subclasses implement :meth:`select`. ``stochastic`` says whether the estimator samples in
    training mode by default; every estimator selects deterministically when ``sample=False``.
    """

    name: str = ""
    stochastic: bool = True

    def select(
        self,
        scores: Tensor,
        mask: Tensor | None,
        k: int,
        temperature: float,
        noise: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Choose ``k`` keys per query.

        Args:
            scores: ``(B, Q, K)``.
            mask: boolean, broadcastable to ``scores``, or ``None``.
            k: keys per query.
            temperature: > 0, see the subclass.
            noise: standard Gumbel noise shaped like ``scores`` to sample with, or ``None`` for
                a deterministic (top-``k``) selection.

        Returns:
            ``(weights (B, Q, K), indices (B, Q, k), logits (B, Q, K))``: ``weights`` are
            exactly ``1/k`` on the selected keys in value (their gradient is the estimator's);
            ``logits`` define the categorical distribution the keys are drawn from, for
            ``log_prob`` and ``entropy``.
        """
        raise NotImplementedError


def _top_k(logits: Tensor, mask: Tensor | None, k: int, noise: Tensor | None) -> Tensor:
    """Indices ``(B, Q, k)`` of the ``k`` largest (noise-perturbed) allowed logits."""
    ranked = _masked(logits if noise is None else logits + noise, mask)
    return ranked.topk(k, dim=-1).indices


def _valid(indices: Tensor, mask: Tensor | None) -> Tensor:
    """``(B, Q, k)`` boolean: the selection is an allowed key."""
    if mask is None:
        return torch.ones_like(indices, dtype=torch.bool)
    mask = mask.expand(*indices.shape[:-1], mask.shape[-1])  # (B, Q, K)
    return mask.gather(-1, indices)


def _straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """``hard`` in value, the gradient of ``soft`` in the backward pass.

    Written ``hard + (soft - soft.detach())`` so the forward value is ``hard`` exactly
    (``x - x`` is exactly 0 in floating point; ``hard - soft.detach() + soft`` is not).
    """
    return hard.to(soft.dtype) + (soft - soft.detach())


class Reinforce(HardEstimator):
    """Score-function estimator (Williams 1992; Xu et al. 2015, "hard" attention).

    Keys are drawn from ``softmax(scores / temperature)``; the weights carry no gradient to the
    scores. Train the scorer through ``out.log_prob`` with :func:`reinforce_loss`.
    """

    name = "reinforce"

    def select(
        self, scores: Tensor, mask: Tensor | None, k: int, temperature: float, noise: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        logits = scores / temperature
        indices = _top_k(logits, mask, k, noise)
        weights = k_hot(indices, scores.shape[-1], _valid(indices, mask)).to(scores.dtype)
        return weights, indices, logits


class GumbelStraightThrough(HardEstimator):
    """Straight-through Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017).

    Forward: ``argmax(scores + g)``, a sample from ``softmax(scores)`` (top-``k`` of the
    perturbed scores for ``k > 1``). Backward: the gradient of the relaxation
    ``softmax((scores + g) / temperature)`` at the same noise ``g``. Lower temperatures make the
    relaxation closer to the sample and its gradient higher-variance (see
    :func:`anneal_temperature`). For ``k > 1`` the backward uses that same single-draw
    relaxation, a heuristic.
    """

    name = "gumbel"

    def select(
        self, scores: Tensor, mask: Tensor | None, k: int, temperature: float, noise: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        indices = _top_k(scores, mask, k, noise)
        hard = k_hot(indices, scores.shape[-1], _valid(indices, mask))
        perturbed = scores if noise is None else scores + noise
        soft = softmax(perturbed, mask, temperature)
        return _straight_through(hard, soft), indices, scores


class TopKStraightThrough(HardEstimator):
    """Deterministic top-``k`` with a straight-through softmax gradient (Bengio et al. 2013).

    Forward: the ``k`` highest scores. Backward: the gradient of ``softmax(scores /
    temperature)``. Deterministic in training mode too; ``sample=True`` perturbs the scores
    with Gumbel noise first (then it draws from ``softmax(scores)``).
    """

    name = "topk"
    stochastic = False

    def select(
        self, scores: Tensor, mask: Tensor | None, k: int, temperature: float, noise: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        indices = _top_k(scores, mask, k, noise)
        hard = k_hot(indices, scores.shape[-1], _valid(indices, mask))
        soft = softmax(scores, mask, temperature)
        return _straight_through(hard, soft), indices, scores


ESTIMATORS: dict[str, type[HardEstimator]] = {
    "reinforce": Reinforce,
    "gumbel": GumbelStraightThrough,
    "topk": TopKStraightThrough,
}


# ----------------------------------------------------------------------------- module


class HardAttention(nn.Module):
    """Hard attention: each query reads exactly ``k`` keys (Xu et al. 2015; Mnih et al. 2014).

    ``scores = score(q, k)``; an estimator from :data:`ESTIMATORS` picks ``k`` allowed keys per
    query; ``weights`` are ``1/k`` on each selected key and exactly zero elsewhere (exactly
    one-hot for ``k = 1``), so rows sum to one as in :class:`SoftAttention` and
    ``output = weights @ values`` is the **mean of the selected values** (the selected value
    itself for ``k = 1``). A query with fewer than ``k`` allowed keys reads all of them (weights
    ``1/m`` each); one with no allowed key gets zeros. Masked keys are never selected.

    In training mode ``"reinforce"`` and ``"gumbel"`` sample; in eval mode every estimator
    selects the top-``k`` scores, unless ``forward(..., sample=True)``.

    Args:
        query_dim: ``Dq``.
        key_dim: ``Dk``.
        score: ``"additive"`` (Bahdanau), ``"dot"``, ``"scaled_dot"`` or ``"general"`` (Luong).
        estimator: ``"reinforce"``, ``"gumbel"`` or ``"topk"`` (see the module docstring).
        k: keys read per query, ``>= 1``.
        temperature: > 0. ``"reinforce"`` samples from ``softmax(scores / temperature)``;
            ``"gumbel"`` and ``"topk"`` select from the raw scores and use it only in the
            backward relaxation. It is a plain attribute, so a schedule can set it each step.
        hidden_dim: hidden size of the additive score (default ``key_dim``).

    Example::

        hard = HardAttention(query_dim=16, key_dim=32, estimator="reinforce")
        out = hard(query, keys, values)   # query (B, Q, 16) or (B, 16); keys (B, K, 32)
        out.weights                       # (B, Q, K), one-hot per query
        out.log_prob, out.entropy         # (B, Q): for reinforce_loss(...)
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        score: str = "additive",
        estimator: str = "reinforce",
        k: int = 1,
        temperature: float = 1.0,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.query_dim = query_dim
        self.key_dim = key_dim
        self.score_name = score
        self.score = make_score(score, query_dim, key_dim, hidden_dim)
        self.estimator = ESTIMATORS[estimator]()
        self.k = k
        self.temperature = temperature

    def extra_repr(self) -> str:
        return (
            f"query_dim={self.query_dim}, key_dim={self.key_dim}, score={self.score_name!r}, "
            f"estimator={self.estimator.name!r}, k={self.k}, temperature={self.temperature}"
        )

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> AttentionOutput:
        """Select ``k`` keys per query and read their values.

        Args:
            query: ``(B, Q, Dq)``, or ``(B, Dq)`` for one query per example.
            keys: ``(B, K, Dk)``.
            values: ``(B, K, Dv)``; defaults to ``keys``.
            mask: boolean, ``True`` = may attend: ``(B, K)`` key padding or ``(B, Q, K)``.
            sample: draw the keys at random (``True``) or take the top-``k`` (``False``);
                ``None`` samples in training mode for the stochastic estimators.
            generator: random source for the Gumbel noise, for reproducible samples.

        Returns:
            ``AttentionOutput(output (B, Q, Dv), weights (B, Q, K), log_prob (B, Q),
            entropy (B, Q))``, without the ``Q`` dimension for a single query. ``log_prob`` is
            the log-probability of the selection (in the order drawn) under the estimator's
            distribution and carries the gradient for REINFORCE; ``entropy`` is that
            distribution's entropy over the allowed keys. Both are 0 for a query with no
            allowed key.
        """
        query, values, single = memory_inputs(query, keys, values, self.query_dim, self.key_dim)
        if self.k > keys.shape[1]:
            raise ValueError(f"k = {self.k} is larger than the number of keys K = {keys.shape[1]}")
        scores = self.score(query, keys)  # (B, Q, K)
        mask = prepare_mask(mask, scores.shape)
        if sample is None:
            sample = self.training and self.estimator.stochastic
        noise = None
        if sample:
            noise = sample_gumbel(scores.shape, generator, scores.device, scores.dtype)
        weights, indices, logits = self.estimator.select(
            scores, mask, self.k, self.temperature, noise
        )
        logits = _masked(logits, mask)
        valid = _valid(indices, mask)
        log_prob = selection_log_prob(logits, indices, valid)  # (B, Q)
        entropy = torch.where(valid[..., 0], _entropy(logits, mask), 0.0)  # (B, Q)
        output = weights.to(values.dtype) @ values  # (B, Q, Dv)
        if single:
            return AttentionOutput(
                output.squeeze(1), weights.squeeze(1), log_prob.squeeze(1), entropy.squeeze(1)
            )
        return AttentionOutput(output, weights, log_prob, entropy)
