"""A small Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

The image is cut into ``P`` non-overlapping ``patch x patch`` patches, each embedded linearly (a
convolution with stride = kernel = patch); a learned class token is prepended, learned position
embeddings are added, a stack of pre-norm :class:`~attnkit.models.blocks.TransformerBlock`\\ s
mixes the ``1 + P`` tokens, and a linear head classifies the class token after a final norm.

Variants (``ViTConfig.attention``):

- ``"multihead"``: the ViT, tokens mixed by multi-head self-attention.
- ``"none"``: the same network with :class:`~attnkit.models.blocks.MeanMixing` (every token
  receives the projected mean of all tokens) instead of attention: the ablation. To keep the
  parameter budget, each MLP is ``embed_dim`` units wider, which replaces the query and key
  projections it lacks (``2·E²`` weights per block; the counts then differ by ``E`` per block).
- ``"hard"``: hard attention picks the ``select`` patches to read (top-``k`` with a
  straight-through gradient, :class:`~attnkit.attention.hard.HardAttention`; the class token's
  embedding is the query), and the ViT runs on the class token and those patches only.

:func:`attnkit.tasks.matched_cnn` sizes the no-attention baseline,
:class:`~attnkit.models.glimpse.ConvNet`, to a ViT's parameter count;
:func:`attnkit.tasks.mnist_recipe` and :func:`attnkit.tasks.digits_recipe` are the training tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnkit._moved import moved_name
from attnkit.attention.hard import HardAttention
from attnkit.models.blocks import BlockConfig, MeanMixing, TransformerBlock

__all__ = [
    "ATTENTIONS",
    "ViT",
    "ViTConfig",
    "ViTOutput",
]

ATTENTIONS = ("multihead", "none", "hard")


@dataclass(frozen=True)
class ViTConfig:
    """Size, variant and regularisation of a :class:`ViT`."""

    image_size: int = 28  # side S of the square input images
    patch_size: int = 7  # side of a patch; must divide image_size
    channels: int = 1  # input channels
    classes: int = 10  # output classes
    embed_dim: int = 64  # token width E
    depth: int = 4  # transformer blocks
    num_heads: int = 4  # attention heads; must divide embed_dim
    mlp_ratio: float = 2.0  # MLP hidden width / E (the "none" variant adds 1)
    attention: str = "multihead"  # "multihead" (ViT), "none" (mean mixing), "hard" (top-k)
    select: int = 8  # patches read by the "hard" variant
    dropout: float = 0.0  # dropout on the embeddings and each residual branch
    attention_dropout: float = 0.0  # dropout on the attention weights
    head_dropout: float = 0.0  # DropHead (Zhou et al. 2020)

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "channels", "classes", "depth", "select"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {list(ATTENTIONS)}, got {self.attention!r}")
        if self.attention == "hard" and self.select > self.patches:
            raise ValueError(
                f"select must be in 1..{self.patches} (the patches), got {self.select}"
            )
        self.block  # noqa: B018 - validates embed_dim, num_heads, mlp_ratio and the dropouts

    @property
    def patches(self) -> int:
        """``P``, patches per image."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens(self) -> int:
        """Tokens the blocks mix: the class token and the patches read."""
        return 1 + (self.select if self.attention == "hard" else self.patches)

    @property
    def block(self) -> BlockConfig:
        """The configuration of each block."""
        return BlockConfig(
            self.embed_dim,
            self.num_heads,
            mlp_ratio=self.mlp_ratio + (1.0 if self.attention == "none" else 0.0),
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            head_dropout=self.head_dropout,
        )


@dataclass(frozen=True)
class ViTOutput:
    """What a :class:`ViT` computed.

    Attributes:
        logits: ``(B, C)``.
        weights: per block, ``(B, H, T, T)`` with ``T = config.tokens`` (token 0 is the class
            token), when asked for; ``(B, 1, T, T)`` uniform weights for ``"none"``.
        selected: ``(B, k)`` int64, the patches read by ``"hard"`` (row-major patch indices),
            in the order the tokens ``1..k`` hold them; ``None`` otherwise.
    """

    logits: Tensor
    weights: tuple[Tensor, ...] | None = None
    selected: Tensor | None = None


class ViT(nn.Module):
    """A small Vision Transformer; see the module docstring.

    ``forward(images (B, C, S, S), need_weights=False) -> ViTOutput``.

    Example::

        vit = ViT(ViTConfig(image_size=28, patch_size=7))     # 16 patches
        out = vit(images, need_weights=True)                  # images (B, 1, 28, 28)
        out.logits                                            # (B, 10)
        out.weights[-1][:, :, 0, 1:]                          # class token -> patches (B, 4, 16)
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if not isinstance(config, ViTConfig):
            raise TypeError(f"config must be a ViTConfig, got {type(config).__name__}")
        self.config = config
        e = config.embed_dim
        self.patch_embed = nn.Conv2d(config.channels, e, config.patch_size, config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.patches, e))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.selector = (
            HardAttention(e, e, score="scaled_dot", estimator="topk", k=config.select)
            if config.attention == "hard"
            else None
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                config.block, mixer=MeanMixing(e) if config.attention == "none" else None
            )
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(e)
        self.head = nn.Linear(e, config.classes)

    def embed(self, images: Tensor) -> Tensor:
        """Class token and patch tokens with positions: ``(B, 1 + P, E)``."""
        c, s = self.config.channels, self.config.image_size
        if images.ndim != 4 or images.shape[1:] != (c, s, s):
            raise ValueError(f"images must be (B, {c}, {s}, {s}), got {tuple(images.shape)}")
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, P, E)
        cls = self.cls_token.expand(len(images), -1, -1)  # (B, 1, E)
        return torch.cat([cls, patches], 1) + self.pos_embed  # (B, 1 + P, E)

    def _select(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Class token and the ``k`` patches hard attention picks: ``(B, 1 + k, E)``, ``(B, k)``.

        The picked tokens are scaled by ``k·weight``, which is 1 in the forward pass and carries
        the straight-through gradient to the selector.
        """
        k = self.config.select
        cls, patches = tokens[:, :1], tokens[:, 1:]
        weights = self.selector(cls, patches).weights[:, 0]  # (B, P), 1/k on the picked
        selected = weights.detach().topk(k, -1).indices  # (B, k)
        scale = weights.gather(1, selected) * k  # (B, k), forward value 1
        index = selected[..., None].expand(-1, -1, tokens.shape[-1])  # (B, k, E)
        picked = patches.gather(1, index) * scale[..., None]  # (B, k, E)
        return torch.cat([cls, picked], 1), selected

    def forward(self, images: Tensor, need_weights: bool = False) -> ViTOutput:
        x = self.embed(images)  # (B, 1 + P, E)
        selected = None
        if self.selector is not None:
            x, selected = self._select(x)  # (B, 1 + k, E)
        x = self.drop(x)
        weights = []
        for block in self.blocks:
            out = block(x, need_weights=need_weights)
            x = out.output  # (B, T, E)
            weights.append(out.weights)
        logits = self.head(self.norm(x[:, 0]))  # (B, C)
        return ViTOutput(logits, tuple(weights) if need_weights else None, selected)


def __getattr__(name: str):
    return moved_name(__name__, name)  # the recipes and matched_cnn moved to attnkit.tasks.vision
