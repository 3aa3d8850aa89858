"""Text classifiers: embeddings, an encoder, then a pooling that says which tokens were read.

The ``attention`` option picks the encoder and the pooling over its states ``h_t``:

- ``"soft"``: BiGRU, then additive attention pooling (Bahdanau et al. 2015; the word attention
  of Yang et al. 2016): ``a = softmax_t(vᵀ tanh(W u + U h_t + b))`` with a learned query ``u``,
  pooled ``sum_t a_t h_t`` (:class:`~attnkit.attention.soft.SoftAttention`).
- ``"hard"``: BiGRU, then :class:`~attnkit.attention.hard.HardAttention` pooling: the ``k``
  highest-scoring states are read, trained by straight-through Gumbel-softmax (``"gumbel"``,
  Jang et al. 2017) or top-``k`` (``"topk"``).
- ``"multihead"``: a transformer encoder (:class:`~attnkit.models.blocks.TransformerBlock`,
  sinusoidal positions, Vaswani et al. 2017), then the same additive attention pooling.
- ``"none"``: BiGRU, then the mean of the states over the real tokens: the baseline.

``encoder="lstm"`` swaps the BiGRU for a BiLSTM (Hochreiter & Schmidhuber 1997; Jain & Wallace
2019's encoder). The embeddings can start from pretrained vectors (:mod:`attnkit.data.vectors`:
a word2vec/GloVe file, or the bundled MiniLM's input embeddings), frozen
(``freeze_embeddings=True``) or fine-tuned.

Padding (id 0, on the right) is never read: the BiGRU runs on packed sequences, the transformer
masks padded keys, and the pooling gives padded positions zero weight. The pooling weights
``(B, T)`` are returned for interpretability (for ``"none"``, the uniform mean's weights).
:func:`attnkit.tasks.text_recipe` trains it on the evidence task or on a user's CSV/JSONL file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkit._moved import moved_name
from attnkit.attention.hard import HardAttention
from attnkit.attention.positional import sinusoidal_embedding
from attnkit.attention.soft import SoftAttention
from attnkit.models.blocks import BlockConfig, TransformerBlock

__all__ = [
    "TextClassifier",
    "TextClassifierConfig",
    "TextClassifierResult",
]

ATTENTIONS = ("soft", "hard", "multihead", "none")
HARD_ESTIMATORS = ("gumbel", "topk")
ENCODERS = ("gru", "lstm", "transformer")  # transformer goes with "multihead", and only it


@dataclass(frozen=True)
class TextClassifierConfig:
    vocab_size: int = 1000  # word ids, 0 = padding
    classes: int = 2  # output labels
    attention: str = "soft"  # "soft", "hard", "multihead" or "none" (see the module doc)
    embed_dim: int = 64  # word embedding size; the transformer's width for "multihead"
    hidden: int = 64  # BiGRU size per direction (states are 2 * hidden)
    attention_dim: int = 64  # hidden size A of the additive pooling score vᵀ tanh(W u + U h)
    hard_estimator: str = "gumbel"  # "hard" pooling: "gumbel" or "topk" straight-through
    hard_k: int = 1  # "hard" pooling: states read per example
    hard_temperature: float = 1.0  # "hard" pooling: temperature of the backward relaxation
    num_layers: int = 2  # transformer blocks ("multihead")
    num_heads: int = 4  # attention heads per block ("multihead")
    dropout: float = 0.1  # dropout on embeddings and on the pooled vector
    attention_dropout: float = 0.0  # attention-weight dropout in the transformer blocks
    head_dropout: float = 0.0  # DropHead in the transformer blocks (Zhou et al. 2020)
    encoder: str | None = None  # "gru" or "lstm" (bidirectional); None: gru, or the
    # transformer for "multihead"
    freeze_embeddings: bool = False  # keep the (pretrained) embeddings fixed during training

    @property
    def encoder_kind(self) -> str:
        """The encoder in use: ``"gru"``, ``"lstm"`` or ``"transformer"``."""
        if self.encoder is not None:
            return self.encoder
        return "transformer" if self.attention == "multihead" else "gru"

    def __post_init__(self) -> None:
        if self.encoder is not None and self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {list(ENCODERS)}, got {self.encoder!r}")
        if (self.encoder_kind == "transformer") != (self.attention == "multihead"):
            raise ValueError(
                f"encoder {self.encoder_kind!r} does not go with attention {self.attention!r}: "
                "'multihead' is the transformer encoder, the other poolings run on 'gru' or 'lstm'"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"attention must be one of {list(ATTENTIONS)} for TextClassifier, "
                f"got {self.attention!r}"
            )
        if self.hard_estimator not in HARD_ESTIMATORS:
            raise ValueError(
                f"hard_estimator must be one of {list(HARD_ESTIMATORS)}, "
                f"got {self.hard_estimator!r}"
            )
        for name in ("vocab_size", "embed_dim", "hidden", "attention_dim", "hard_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("num_layers", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.classes < 2:
            raise ValueError(f"classes must be >= 2, got {self.classes}")
        if self.attention == "multihead" and self.embed_dim % (2 * self.num_heads):
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be num_heads ({self.num_heads}) times an "
                "even head size for 'multihead'"
            )
        for name in ("dropout", "attention_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class TextClassifierResult:
    """What the classifier computed.

    Attributes:
        logits: ``(B, C)``.
        weights: ``(B, T)`` the pooling weights: sum to 1 over the real tokens, 0 on padding
            (k-hot for ``"hard"``, uniform for ``"none"``).
        states: ``(B, T, D)`` the encoder states that were pooled (zero on padding for the
            BiGRU).
    """

    logits: Tensor
    weights: Tensor
    states: Tensor


def _check_mask(tokens: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """The padding mask ``(B, T)`` (default ``tokens != 0``) and the lengths ``(B,)``."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (B, T), got shape {tuple(tokens.shape)}")
    if mask is None:
        mask = tokens != 0
    if mask.dtype != torch.bool or mask.shape != tokens.shape:
        raise ValueError(
            f"mask must be a boolean (B, T) = {tuple(tokens.shape)} tensor, got {mask.dtype} "
            f"{tuple(mask.shape)}"
        )
    lengths = mask.sum(1)
    if int(lengths.min()) < 1:
        raise ValueError("every example needs at least one real token (mask row all False)")
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    if not torch.equal(mask, positions < lengths[:, None]):
        raise ValueError("mask must mark a prefix of each row: padding goes on the right")
    return mask, lengths


class TransformerEncoder(nn.Module):
    """Sinusoidal positions, ``num_layers`` transformer blocks, a final LayerNorm."""

    def __init__(self, config: TextClassifierConfig) -> None:
        super().__init__()
        block = BlockConfig(
            config.embed_dim,
            config.num_heads,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            head_dropout=config.head_dropout,
        )
        self.blocks = nn.ModuleList(TransformerBlock(block) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.embed_dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x (B, T, E)``, key-padding ``mask (B, T)`` -> ``(B, T, E)``."""
        positions = torch.arange(x.shape[1], device=x.device)
        x = x + sinusoidal_embedding(positions, x.shape[-1]).to(x.dtype)  # (B, T, E)
        for block in self.blocks:
            x = block(x, mask=mask).output
        return self.norm(x)


class TextClassifier(nn.Module):
    """Embeddings, a BiGRU or transformer encoder, attention (or mean) pooling, a linear head.

    Example::

        model = TextClassifier(TextClassifierConfig(vocab_size=500, classes=3))
        result = model(tokens)            # tokens (B, T), 0 = padding
        result.logits, result.weights     # (B, 3), (B, T)
    """

    def __init__(self, config: TextClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        self.dropout = nn.Dropout(config.dropout)
        if config.attention == "multihead":
            self.encoder: nn.Module = TransformerEncoder(config)
            size = config.embed_dim
        else:
            rnn = nn.LSTM if config.encoder_kind == "lstm" else nn.GRU
            self.encoder = rnn(config.embed_dim, config.hidden, batch_first=True,
                               bidirectional=True)  # fmt: skip
            size = 2 * config.hidden
        self.embed.weight.requires_grad_(not config.freeze_embeddings)
        self.pool: nn.Module | None = None
        if config.attention in ("soft", "multihead"):
            self.pool = SoftAttention(size, size, score="additive", hidden_dim=config.attention_dim)
        elif config.attention == "hard":
            self.pool = HardAttention(
                size, size, score="additive", estimator=config.hard_estimator, k=config.hard_k,
                temperature=config.hard_temperature, hidden_dim=config.attention_dim,
            )  # fmt: skip
        self.query = nn.Parameter(torch.randn(size) * size**-0.5) if self.pool is not None else None
        self.head = nn.Linear(size, config.classes)

    def encode(self, tokens: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        """Encoder states ``(B, T, D)`` of ``tokens (B, T)`` (``lengths (B,)``: ``mask.sum(1)``)."""
        return self.encode_embeddings(self.embed(tokens), mask)

    def encode_embeddings(self, embeddings: Tensor, mask: Tensor) -> Tensor:
        """Encoder states ``(B, T, D)`` of token ``embeddings (B, T, E)`` that read only the
        ``True`` positions of ``mask (B, T)``, any of them (not only a prefix): the recurrent
        encoders run on the visible tokens moved to the front in order (packed), so a hidden
        token is deleted from the sequence, and its state is zero; the transformer masks it as a
        key (its own state is still computed)."""
        x = self.dropout(embeddings)  # (B, T, E)
        if self.config.attention == "multihead":
            return self.encoder(x, mask)
        n = x.shape[1]
        order = (~mask).to(torch.int8).argsort(dim=1, stable=True)  # (B, T) visible first
        front = x.gather(1, order[..., None].expand_as(x))  # (B, T, E)
        lengths = mask.sum(1).clamp_min(1)  # a row with nothing visible pools to zero
        packed = pack_padded_sequence(front, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.encoder(packed)[0], batch_first=True, total_length=n)
        back = order.argsort(dim=1)[..., None].expand(-1, -1, states.shape[-1])  # (B, T, 2H)
        return states.gather(1, back) * mask[..., None]  # (B, T, 2H)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> TextClassifierResult:
        """Classify ``tokens (B, T)`` (right-padded with 0); ``mask (B, T)``, ``True`` on real
        tokens, defaults to ``tokens != 0``: :meth:`forward_embeddings` of their embeddings."""
        mask, _ = _check_mask(tokens, mask)
        return self.forward_embeddings(self.embed(tokens), mask)

    def forward_embeddings(
        self, embeddings: Tensor, mask: Tensor, detach_weights: bool = False
    ) -> TextClassifierResult:
        """Classify from the token embeddings: the seam that attributions differentiate through.

        Args:
            embeddings: ``(B, T, E)``, as ``self.embed(tokens)`` gives them.
            mask: ``(B, T)`` boolean, ``True`` on the tokens the model may read: any of them, not
                only a prefix (a hidden token is deleted from a recurrent encoder's sequence and
                masked as a key in the transformer and the pooling; see
                :meth:`encode_embeddings`). A row with nothing visible pools to zero.
            detach_weights: stop the gradient through the pooling weights (the forward value is
                unchanged), for gradients at fixed attention (Jain & Wallace 2019, §4.1).

        Returns:
            :class:`TextClassifierResult`, the pooled vector read as ``Σ_t w_t h_t`` through the
            returned ``weights`` (so that ``weights`` carries the gradient of the logits).

        Example::

            result = model.forward_embeddings(model.embed(tokens), tokens != 0)
            # == model(tokens): same logits, weights and states
        """
        if embeddings.ndim != 3 or embeddings.shape[-1] != self.config.embed_dim:
            raise ValueError(
                f"embeddings must be (B, T, E={self.config.embed_dim}), got "
                f"{tuple(embeddings.shape)}"
            )
        if mask.dtype != torch.bool or mask.shape != embeddings.shape[:2]:
            raise ValueError(
                f"mask must be a boolean (B, T) = {tuple(embeddings.shape[:2])} tensor, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        states = self.encode_embeddings(embeddings, mask)  # (B, T, D)
        if self.pool is None:  # the mean over the visible tokens
            weights = mask.to(states.dtype) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, T)
        else:
            query = self.query.expand(embeddings.shape[0], -1)  # (B, D)
            weights = self.pool(query, states, mask=mask).weights  # (B, T)
        read = weights.detach() if detach_weights else weights
        pooled = (read.unsqueeze(1) @ states).squeeze(1)  # (B, D): the pooling's own output
        return TextClassifierResult(self.head(self.dropout(pooled)), weights, states)


def __getattr__(name: str):
    return moved_name(__name__, name)  # the recipe and its options moved to attnkit.tasks.text
