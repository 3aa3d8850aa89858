"""LLM evaluation through attention: signals during generation."""

from attnkit.llm.generate import GenerationTrace, generate
from attnkit.llm.signals import lookback_ratio, retrieval_hits

__all__ = ["GenerationTrace", "generate", "lookback_ratio", "retrieval_hits"]
