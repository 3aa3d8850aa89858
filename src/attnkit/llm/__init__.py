"""LLM evaluation through attention: signals during generation, hallucination detectors,
evaluation suites, and attribution of generated tokens."""

from attnkit.llm.attribution import Attribution, attribute
from attnkit.llm.detection import Detector, recommended_detector
from attnkit.llm.generation import GenerationTrace, generate
from attnkit.llm.guided import GuidedGeneration, guided_generate
from attnkit.llm.lookback_lens import LookbackLens, span_features, window_features
from attnkit.llm.readout import AnswerSignals, read_answers
from attnkit.llm.signals import lookback_ratio, retrieval_hits
from attnkit.llm.suite import Suite, SuiteResult, default_suite

__all__ = [
    "AnswerSignals",
    "Attribution",
    "Detector",
    "GenerationTrace",
    "GuidedGeneration",
    "LookbackLens",
    "Suite",
    "SuiteResult",
    "attribute",
    "default_suite",
    "generate",
    "guided_generate",
    "lookback_ratio",
    "read_answers",
    "recommended_detector",
    "retrieval_hits",
    "span_features",
    "window_features",
]
