"""Explanations from attention, and how far they can be trusted.

:func:`explain` runs every explanation method on a classifier and judges each against
erasure-based faithfulness (:class:`Explanation`); the methods are a registry a user adds to
(:func:`register_method`) and read the classifier through a :class:`ModelView`. The methods'
maps are also functions of their own: :func:`rollout`, :func:`flow`, :func:`relevance`,
:func:`head_importance`.
"""

from attnkit._moved import moved_name
from attnkit.interpret.attention_flow import flow
from attnkit.interpret.attention_rollout import fuse_heads, rollout, rollout_encoder_decoder
from attnkit.interpret.classifier_views import ModelView, model_view
from attnkit.interpret.explanation import Explanation, explain
from attnkit.interpret.heads import HeadStats, head_stats
from attnkit.interpret.loading import Explainable, load_explainable
from attnkit.interpret.methods import ExplanationMethod, register_method
from attnkit.interpret.pruning import PruningCurve, prune_heads, pruned
from attnkit.interpret.relevance_maps import HeadImportance, head_importance, relevance
from attnkit.interpret.verdicts import MethodVerdict, judge

__all__ = [
    "Explainable",
    "Explanation",
    "ExplanationMethod",
    "HeadImportance",
    "HeadStats",
    "MethodVerdict",
    "ModelView",
    "PruningCurve",
    "explain",
    "flow",
    "fuse_heads",
    "head_importance",
    "head_stats",
    "judge",
    "load_explainable",
    "model_view",
    "prune_heads",
    "pruned",
    "register_method",
    "relevance",
    "rollout",
    "rollout_encoder_decoder",
]


def __getattr__(name: str):
    return moved_name(__name__, name)
