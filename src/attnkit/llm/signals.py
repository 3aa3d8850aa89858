"""Per-token attention signals of a generated answer, from streamed statistics.

- Lookback ratio (Chuang et al. 2024, "Lookback Lens"): for a new token and a head,
  ``LR = A_ctx / (A_ctx + A_new)``, where ``A_ctx`` is the mean weight on the context tokens and
  ``A_new`` the mean weight on the tokens generated so far (none for the first: ``LR = 1``).
- Retrieval hits (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
  Factuality"): a head copies when the token it attends to most lies in the context and equals
  the token being generated; the share of such steps is the head's retrieval score.

The functions are elementwise over any layout of steps, layers and heads.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["lookback_ratio", "retrieval_hits"]


def lookback_ratio(
    context_mass: Tensor, prompt_mass: Tensor, context_length: int, new_counts: Tensor
) -> Tensor:
    """Lookback ratio from span masses.

    Args:
        context_mass: total weight on the context span, per query (any shape).
        prompt_mass: total weight on the whole prompt (context included), same shape; the rest
            of each causal row, ``1 - prompt_mass``, lies on the generated tokens.
        context_length: number of context tokens (> 0).
        new_counts: generated tokens each query can see (0 for the first), broadcastable.

    Returns:
        The lookback ratio in ``[0, 1]``, shaped like ``context_mass``.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be positive, got {context_length}")
    on_context = context_mass / context_length
    on_new = (1.0 - prompt_mass).clamp_min(0.0) / new_counts.clamp_min(1)
    on_new = on_new * (new_counts > 0)
    total = on_context + on_new
    return (on_context / total.clamp_min(1e-30)).where(total > 0, 0.0)


def retrieval_hits(
    argmax: Tensor, sequence: Tensor, generated: Tensor, context: tuple[int, int]
) -> Tensor:
    """Whether each head copied the generated token from the context at each step.

    Args:
        argmax: key position of each query's largest weight (any shape).
        sequence: ``(K,)`` token ids of the whole sequence (prompt and generated).
        generated: the token produced at each query's step, broadcastable to ``argmax``.
        context: ``(start, stop)`` token positions of the context.

    Returns:
        Boolean, shaped like ``argmax``.
    """
    start, stop = context
    in_context = (argmax >= start) & (argmax < stop)
    return in_context & (sequence[argmax] == generated)
