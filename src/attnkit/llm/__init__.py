"""LLM evaluation through attention: signals during generation, hallucination detectors, and
attribution of generated tokens."""

from attnkit.llm.attribution import Attribution, attribute
from attnkit.llm.detection import Detector, recommended_detector
from attnkit.llm.detector import LookbackLens, span_features, window_features
from attnkit.llm.generate import GenerationTrace, generate
from attnkit.llm.signals import lookback_ratio, retrieval_hits

__all__ = [
    "Attribution",
    "Detector",
    "GenerationTrace",
    "LookbackLens",
    "attribute",
    "generate",
    "lookback_ratio",
    "recommended_detector",
    "retrieval_hits",
    "span_features",
    "window_features",
]
