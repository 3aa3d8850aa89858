"""LLM evaluation through attention: signals during generation."""

from attnkit.llm.detector import LookbackLens, span_features, window_features
from attnkit.llm.generate import GenerationTrace, generate
from attnkit.llm.signals import lookback_ratio, retrieval_hits

__all__ = [
    "GenerationTrace",
    "LookbackLens",
    "generate",
    "lookback_ratio",
    "retrieval_hits",
    "span_features",
    "window_features",
]
