"""Models that use attnkit's attention mechanisms."""

from attnkit.models.glimpse import (
    ConvConfig,
    ConvNet,
    GlimpseConfig,
    GlimpseNetwork,
    GlimpseResult,
    evaluate,
    train_classifier,
)

__all__ = [
    "ConvConfig",
    "ConvNet",
    "GlimpseConfig",
    "GlimpseNetwork",
    "GlimpseResult",
    "evaluate",
    "train_classifier",
]
