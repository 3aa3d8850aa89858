"""Recording attention weights and statistics from any model, at close to fused speed."""

from attnkit.capture.hooks import attention_layers
from attnkit.capture.intervene import intervene
from attnkit.capture.recorder import Recording, capture
from attnkit.capture.stats import attention_stats, stats_from_weights

__all__ = [
    "Recording",
    "attention_layers",
    "attention_stats",
    "capture",
    "intervene",
    "stats_from_weights",
]
