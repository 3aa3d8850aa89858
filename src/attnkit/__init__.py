"""attnkit: attention for machine learning, fast by default and open to inspection.

``import attnkit`` needs only torch and numpy; heavier parts load when they are used.
"""

from attnkit import _moved
from attnkit.attention import (
    AttentionOutput,
    HardAttention,
    KVCache,
    MultiHeadAttention,
    SoftAttention,
)
from attnkit.recording import capture

__version__ = "0.1.0"

_moved.install()  # the import paths renamed in 0.2 keep working, with a warning, until 0.3

__all__ = [
    "AttentionOutput",
    "HardAttention",
    "KVCache",
    "MultiHeadAttention",
    "SoftAttention",
    "__version__",
    "capture",
]
