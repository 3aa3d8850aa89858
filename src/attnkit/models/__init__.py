"""Models that use attnkit's attention mechanisms: ``nn.Module`` classes and their frozen configs.

Training recipes (a task's data, model, baseline and metrics) live in :mod:`attnkit.tasks`.
"""

from attnkit._moved import moved_name
from attnkit.models.blocks import BlockConfig, TransformerBlock
from attnkit.models.glimpse import ConvConfig, ConvNet, GlimpseConfig, GlimpseNetwork, GlimpseResult
from attnkit.models.lm import CausalLM, CausalLMConfig
from attnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqResult
from attnkit.models.text import TextClassifier, TextClassifierConfig, TextClassifierResult
from attnkit.models.timeseries import AttentionForecaster, Forecast, ForecasterConfig
from attnkit.models.vision import ViT, ViTConfig, ViTOutput

__all__ = [
    "AttentionForecaster",
    "BlockConfig",
    "CausalLM",
    "CausalLMConfig",
    "ConvConfig",
    "ConvNet",
    "Forecast",
    "ForecasterConfig",
    "GlimpseConfig",
    "GlimpseNetwork",
    "GlimpseResult",
    "Seq2Seq",
    "Seq2SeqConfig",
    "Seq2SeqResult",
    "TextClassifier",
    "TextClassifierConfig",
    "TextClassifierResult",
    "TransformerBlock",
    "ViT",
    "ViTConfig",
    "ViTOutput",
]


def __getattr__(name: str):
    return moved_name(__name__, name)
