"""Recording attention weights and statistics from any model, at close to fused speed."""

from attnkit.capture.recorder import Recording, attention_layers, capture
from attnkit.capture.stats import attention_stats, stats_from_weights

__all__ = ["Recording", "attention_layers", "attention_stats", "capture", "stats_from_weights"]
