"""Explanations from attention, and how far they can be trusted."""

from attnkit.interpret.flow import flow
from attnkit.interpret.heads import HeadStats, head_stats
from attnkit.interpret.loading import Explainable, load_explainable, save_vocabulary
from attnkit.interpret.pruning import PruningCurve, prune_heads, pruned
from attnkit.interpret.relevance import HeadImportance, head_importance, relevance
from attnkit.interpret.rollout import fuse_heads, rollout, rollout_encoder_decoder
from attnkit.interpret.verdicts import MethodVerdict, judge

__all__ = [
    "Explainable",
    "HeadImportance",
    "HeadStats",
    "MethodVerdict",
    "PruningCurve",
    "flow",
    "fuse_heads",
    "head_importance",
    "head_stats",
    "judge",
    "load_explainable",
    "prune_heads",
    "pruned",
    "relevance",
    "rollout",
    "rollout_encoder_decoder",
    "save_vocabulary",
]
