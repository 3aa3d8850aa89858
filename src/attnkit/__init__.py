"""attnkit: attention for machine learning, fast by default and open to inspection.

``import attnkit`` needs only torch and numpy; heavier parts load when they are used.
"""

from attnkit.attention import (
    AttentionOutput,
    HardAttention,
    KVCache,
    MultiHeadAttention,
    SoftAttention,
)
from attnkit.capture import capture

__version__ = "0.1.0"

__all__ = [
    "AttentionOutput",
    "HardAttention",
    "KVCache",
    "MultiHeadAttention",
    "SoftAttention",
    "__version__",
    "capture",
]
