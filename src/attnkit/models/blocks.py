"""The pre-norm transformer block (Vaswani et al. 2017; pre-norm as in GPT-2 and nanoGPT).

``x + mix(norm(x))`` then ``x + mlp(norm(x))``: token mixing by attention
(:class:`~attnkit.attention.multihead.MultiHeadAttention`) and a per-token MLP, each added to the
residual stream. The mixer is swappable: :class:`MeanMixing` replaces attention by the mean of
the (allowed) tokens, the no-attention ablation that keeps everything else of the block.

Example::

    block = TransformerBlock(BlockConfig(embed_dim=64, num_heads=4, attention_dropout=0.1))
    out = block(x, mask=padding, need_weights=True)   # x (B, T, 64), padding (B, T) bool
    out.output    # (B, T, 64)
    out.weights   # (B, 4, T, T)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnkit.attention.functional import prepare_mask
from attnkit.attention.multihead import MultiHeadAttention
from attnkit.attention.output import AttentionOutput

__all__ = ["BlockConfig", "MeanMixing", "TransformerBlock"]


@dataclass(frozen=True)
class BlockConfig:
    """Size and regularisation of a :class:`TransformerBlock`."""

    embed_dim: int  # model width E
    num_heads: int  # attention heads H; must divide embed_dim
    mlp_ratio: float = 4.0  # MLP hidden width = round(mlp_ratio * E)
    dropout: float = 0.0  # dropout on each residual branch's output (attention and MLP)
    attention_dropout: float = 0.0  # dropout on the attention weights
    head_dropout: float = 0.0  # DropHead (Zhou et al. 2020): whole heads dropped in training
    causal: bool = False  # each token attends only to itself and earlier tokens

    def __post_init__(self) -> None:
        for name in ("embed_dim", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.mlp_hidden < 1:
            raise ValueError(f"mlp_ratio must give an MLP width >= 1, got {self.mlp_ratio}")
        for name in ("dropout", "attention_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the MLP."""
        return round(self.mlp_ratio * self.embed_dim)


class MeanMixing(nn.Module):
    """Token mixing without attention: every token receives ``out(mean_k value(x_k))``.

    It is attention with uniform weights over the allowed keys (the value and output
    projections of :class:`MultiHeadAttention` without its queries and keys), so it has the same
    call signature and returns those uniform weights when asked.

    ``forward(x (B, T, E), mask=None, need_weights=False) -> AttentionOutput(output (B, T, E),
    weights (B, 1, T, T) or None)``; ``mask`` is boolean, ``True`` = may attend: a key-padding
    mask ``(B, T)``, a ``(B, T, T)`` mask, or one broadcastable to ``(B, 1, T, T)``. ``causal``
    averages over the prefix. A token with no allowed key receives ``out_proj``'s bias.
    """

    def __init__(self, embed_dim: int, causal: bool = False) -> None:
        super().__init__()
        self.value = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.causal = causal

    def forward(
        self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False
    ) -> AttentionOutput:
        if x.ndim != 3 or x.shape[-1] != self.value.in_features:
            raise ValueError(
                f"x must be (B, T, {self.value.in_features}), got shape {tuple(x.shape)}"
            )
        batch, tokens, _ = x.shape
        allowed = torch.ones(1, 1, tokens, tokens, dtype=torch.bool, device=x.device)
        if self.causal:
            allowed = allowed.tril()
        user = prepare_mask(mask, (batch, 1, tokens, tokens))
        if user is not None:
            allowed = allowed & user  # (B, 1 or H, T, T)
        weights = allowed.to(x.dtype)
        weights = weights / weights.sum(-1, keepdim=True).clamp(min=1)  # rows with no key: zeros
        weights = weights.expand(batch, 1, tokens, tokens)  # (B, 1, T, T)
        mixed = weights[:, 0] @ self.value(x)  # (B, T, E)
        return AttentionOutput(self.out_proj(mixed), weights if need_weights else None)


class TransformerBlock(nn.Module):
    """One pre-norm transformer block: ``x + mix(norm(x))``, then ``x + mlp(norm(x))``.

    Args:
        config: sizes and dropouts.
        mixer: the token mixer; default :class:`MultiHeadAttention` built from ``config``. Any
            module called as ``mixer(x, mask=..., need_weights=...) -> AttentionOutput`` fits
            (:class:`MeanMixing` is the no-attention ablation).

    ``forward(x (B, T, E), mask=None, need_weights=False) -> AttentionOutput(output (B, T, E),
    weights (B, H, T, T) or None)``. ``mask`` is boolean, ``True`` = may attend: a key-padding
    mask ``(B, T)`` or any mask :class:`MultiHeadAttention` accepts; padded positions still get
    an output (ignore it), but no token attends to them.
    """

    def __init__(self, config: BlockConfig, mixer: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(config, BlockConfig):
            raise TypeError(f"config must be a BlockConfig, got {type(config).__name__}")
        self.config = config
        e = config.embed_dim
        self.norm1 = nn.LayerNorm(e)
        self.attn = (
            mixer
            if mixer is not None
            else MultiHeadAttention(
                e,
                config.num_heads,
                causal=config.causal,
                dropout=config.attention_dropout,
                head_dropout=config.head_dropout,
            )
        )
        self.drop = nn.Dropout(config.dropout)
        self.norm2 = nn.LayerNorm(e)
        self.mlp = nn.Sequential(
            nn.Linear(e, config.mlp_hidden),
            nn.GELU(),
            nn.Linear(config.mlp_hidden, e),
            nn.Dropout(config.dropout),
        )

    def forward(
        self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False
    ) -> AttentionOutput:
        mixed = self.attn(self.norm1(x), mask=mask, need_weights=need_weights)
        x = x + self.drop(mixed.output)  # (B, T, E)
        x = x + self.mlp(self.norm2(x))
        return AttentionOutput(x, mixed.weights)
