"""Recording attention weights and statistics from any model, at close to fused speed.

:func:`capture` (also ``attnkit.capture``) is the entry point; the modules hold the parts:
``recorder`` (the block and its :class:`Recording`), ``hooks`` (which layers, how they are
wrapped), ``hf`` and ``dispatch`` (Hugging Face models), ``stats`` and ``kernel`` (streamed
statistics and their compiled kernels), ``intervention`` (editing weights).
"""

from attnkit.recording.hooks import attention_layers
from attnkit.recording.intervention import intervene
from attnkit.recording.recorder import Recording, capture
from attnkit.recording.stats import attention_stats, stats_from_weights

__all__ = [
    "Recording",
    "attention_layers",
    "attention_stats",
    "capture",
    "intervene",
    "stats_from_weights",
]
