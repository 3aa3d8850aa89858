"""The attention mechanisms: pure functions in ``functional``, thin modules on top."""

from attnkit.attention.cache import KVCache
from attnkit.attention.hard import HardAttention
from attnkit.attention.multihead import MultiHeadAttention
from attnkit.attention.output import AttentionOutput
from attnkit.attention.positional import ALiBi, PositionScheme, RotaryEmbedding
from attnkit.attention.soft import SoftAttention

__all__ = [
    "ALiBi",
    "AttentionOutput",
    "HardAttention",
    "KVCache",
    "MultiHeadAttention",
    "PositionScheme",
    "RotaryEmbedding",
    "SoftAttention",
]
