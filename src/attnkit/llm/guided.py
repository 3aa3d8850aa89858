"""Guided decoding with a hallucination detector (Chuang et al. 2024, "Lookback Lens", §4).

Generation goes chunk by chunk. For each chunk, ``num_candidates`` continuations of
``chunk_size`` tokens are sampled in one batch (temperature sampling through
:func:`attnkit.llm.generate`, which records the lookback ratio of every new token); the detector
scores each candidate from the mean lookback ratio of its tokens per (layer, head) (or from other
features of its trace, ``features=``), and the candidate it rates most grounded (lowest
hallucination probability) is kept and appended to the prompt for the next chunk. It stops at
the end-of-sequence token or after ``max_new_tokens``.

The kept chunks become part of the prompt, so a candidate's lookback ratio counts only its own
tokens as new (``A_new``), not the chunks before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from attnkit.llm.generation import GenerationTrace, generate
from attnkit.llm.lookback_lens import span_features

__all__ = ["ChunkChoice", "GuidedGeneration", "SpanClassifier", "guided_generate"]


class SpanClassifier(Protocol):
    """Anything that maps ``(n, L·H)`` span features to ``(n,)`` hallucination probabilities."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ChunkChoice:
    """The candidates of one chunk and the detector's verdict on them."""

    candidates: tuple[str, ...]  # decoded text of each sampled candidate
    scores: tuple[float, ...]  # the detector's hallucination probability of each
    chosen: int  # index of the kept candidate: the lowest score (first on ties)


@dataclass(frozen=True)
class GuidedGeneration:
    """Result of :func:`guided_generate`."""

    text: str  # the kept chunks, joined
    new_ids: torch.Tensor  # (n,) token ids of the kept chunks
    chunks: tuple[ChunkChoice, ...]  # one per chunk, in order
    traces: tuple[GenerationTrace, ...]  # the kept candidate's trace, per chunk


def guided_generate(
    model: nn.Module,
    tokenizer,
    prompt: str,
    context: str,
    detector: SpanClassifier,
    num_candidates: int = 4,
    chunk_size: int = 8,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int | None = None,
    eos_token_id: int | None = None,
    features: Callable[[GenerationTrace], np.ndarray] | None = None,
    **generate_kwargs,
) -> GuidedGeneration:
    """Sample ``num_candidates`` chunks at a time and keep the one the detector rates grounded.

    Args:
        model, tokenizer: a Hugging Face causal LM and its tokenizer, as for
            :func:`attnkit.llm.generate`.
        prompt: the prompt text; context: the context, a non-empty substring of ``prompt``.
        detector: scores span features (e.g. a fitted
            :class:`~attnkit.llm.lookback_lens.LookbackLens`).
        num_candidates: candidates sampled per chunk (``k`` in the paper).
        chunk_size: new tokens per chunk.
        max_new_tokens: the most tokens generated in all.
        temperature: sampling temperature of the candidates (> 0).
        seed: seeds the sampling (the global random state is restored afterwards).
        eos_token_id: ends generation; defaults to ``model.generation_config.eos_token_id``.
        features: maps a candidate's trace to the detector's feature row; defaults to the span
            means of its lookback ratio (:func:`~attnkit.llm.lookback_lens.span_features`).
        generate_kwargs: further arguments for ``model.generate`` (``top_k``, ...).

    Returns:
        A :class:`GuidedGeneration`.
    """
    for name, value in (("num_candidates", num_candidates), ("chunk_size", chunk_size),
                        ("max_new_tokens", max_new_tokens)):  # fmt: skip
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not callable(getattr(detector, "predict_proba", None)):
        raise TypeError(
            f"detector must have a predict_proba(features) method, got {type(detector).__name__}"
        )
    if features is None:
        features = _lookback_features
    elif not callable(features):
        raise TypeError(f"features must be callable, got {type(features).__name__}")
    if not isinstance(context, str) or not context or context not in prompt:
        raise ValueError("context must be a non-empty substring of the prompt")
    if eos_token_id is None:
        eos_token_id = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stops = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())

    chunks, kept, text, ids = [], [], "", []
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        while len(ids) < max_new_tokens:
            size = min(chunk_size, max_new_tokens - len(ids))
            traces = generate(
                model,
                tokenizer,
                [prompt + text] * num_candidates,  # one batch: each row samples its own
                context=context,
                max_new_tokens=size,
                do_sample=True,
                temperature=temperature,
                **generate_kwargs,
            )
            rows = np.stack([features(t) for t in traces])
            scores = np.asarray(detector.predict_proba(rows), dtype=np.float64)
            if scores.shape != (num_candidates,):
                raise ValueError(
                    f"detector.predict_proba must return ({num_candidates},) scores, "
                    f"got shape {scores.shape}"
                )
            best = int(np.argmin(scores))
            chosen = traces[best]
            chunks.append(ChunkChoice(tuple(t.text for t in traces), tuple(scores.tolist()), best))
            kept.append(chosen)
            text += chosen.text
            ids += chosen.new_ids.tolist()
            if len(chosen.new_ids) < size or stops & set(chosen.new_ids.tolist()):
                break
    return GuidedGeneration(text, torch.tensor(ids, dtype=torch.long), tuple(chunks), tuple(kept))


def _lookback_features(trace: GenerationTrace) -> np.ndarray:
    return span_features(trace.lookback_ratio)
