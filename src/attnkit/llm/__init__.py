"""LLM evaluation through attention: signals during generation, hallucination detectors,
evaluation suites, and attribution of generated tokens."""

from attnkit.llm.attribution import Attribution, attribute
from attnkit.llm.detection import Detector, answer_score, recommended_detector
from attnkit.llm.generation import GenerationTrace, generate
from attnkit.llm.guided import GuidedGeneration, guided_generate
from attnkit.llm.lookback_lens import LookbackLens, span_features, window_features
from attnkit.llm.readout import AnswerSignals, read_answers
from attnkit.llm.signals import VOCABULARY, lookback_ratio, retrieval_hits, signal_mean
from attnkit.llm.suite import Suite, SuiteResult, default_suite
from attnkit.llm.tokens import token_texts

__all__ = [
    "VOCABULARY",
    "AnswerSignals",
    "Attribution",
    "Detector",
    "GenerationTrace",
    "GuidedGeneration",
    "LookbackLens",
    "Suite",
    "SuiteResult",
    "answer_score",
    "attribute",
    "default_suite",
    "generate",
    "guided_generate",
    "lookback_ratio",
    "read_answers",
    "recommended_detector",
    "retrieval_hits",
    "signal_mean",
    "span_features",
    "token_texts",
    "window_features",
]
