"""Explanations from attention, and how far they can be trusted."""

from attnkit.interpret.heads import HeadStats, head_stats
from attnkit.interpret.rollout import fuse_heads, rollout

__all__ = ["HeadStats", "fuse_heads", "head_stats", "rollout"]
