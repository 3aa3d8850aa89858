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

:func:`matched_cnn` sizes the no-attention baseline, :class:`~attnkit.models.glimpse.ConvNet`, to
a ViT's parameter count. :func:`mnist_recipe` and :func:`digits_recipe` are the training tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.hard import HardAttention
from attnkit.models.blocks import BlockConfig, MeanMixing, TransformerBlock
from attnkit.models.glimpse import ConvConfig, ConvNet

if TYPE_CHECKING:
    from attnkit.train.recipe import Recipe

__all__ = [
    "ATTENTIONS",
    "ViT",
    "ViTConfig",
    "ViTOutput",
    "count_parameters",
    "digits_recipe",
    "matched_cnn",
    "mnist_recipe",
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


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _conv_config(image_size: int, width: int, hidden: int, classes: int) -> ConvConfig:
    return ConvConfig(
        canvas=image_size, channels=(width, 2 * width, 4 * width), hidden=hidden, classes=classes
    )


def matched_cnn(config: ViTConfig) -> ConvConfig:
    """The :class:`~attnkit.models.glimpse.ConvNet` whose parameter count is closest to the ViT's.

    The CNN has channels ``(w, 2w, 4w)`` and a hidden layer of ``h`` units; ``w`` is the largest
    width whose CNN (with ``h = 4w``) does not exceed the ViT's count, then ``h`` is set to close
    the remaining gap (to within ``4w + C + 1`` parameters, one hidden unit).
    """
    target = count_parameters(ViT(config))

    def size(width: int, hidden: int) -> int:
        return count_parameters(
            ConvNet(_conv_config(config.image_size, width, hidden, config.classes))
        )

    width = 1
    while size(width + 1, 4 * (width + 1)) <= target:
        width += 1
    per_unit = 4 * width + 1 + config.classes  # one hidden unit: in weights, bias, out weights
    base = size(width, 1) - per_unit
    hidden = max(1, round((target - base) / per_unit))
    return _conv_config(config.image_size, width, hidden, config.classes)


# ----------------------------------------------------------------------------- recipes

_SPLIT_OPTIONS = ("val_fraction", "test_fraction")
_LOSS_OPTIONS = ("label_smoothing", "model")
_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"image_size": 28, "patch_size": 7},  # 16 patches of 7x7
    "digits": {"image_size": 8, "patch_size": 2, "embed_dim": 32, "depth": 2},  # 16 of 2x2
}


def image_recipe(
    name: str,
    attention: str = "multihead",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """An image-classification task ready for :class:`attnkit.train.Trainer`.

    Args:
        name: ``"mnist"`` (5,000 28x28 digits) or ``"digits"`` (scikit-learn's 8x8 digits).
        attention: ``"multihead"`` (ViT), ``"none"`` (mean-mixing ViT, or the CNN with
            ``model="cnn"``) or ``"hard"`` (top-k patch selection).
        seed: seeds the stratified splits and the model's initialisation.
        fraction: share of the training split kept, per class.
        data: not supported (the digit sets are bundled); must be ``None``.
        options: :class:`ViTConfig` fields (``patch_size``, ``depth``, ``embed_dim``,
            ``num_heads``, ``dropout``, ``attention_dropout``, ``head_dropout``, ...),
            ``width`` (an alias of ``embed_dim``), ``label_smoothing`` (of the cross-entropy),
            ``model`` (``"vit"`` or ``"cnn"``: the :func:`matched_cnn` baseline, needs
            ``attention="none"``), ``val_fraction`` and ``test_fraction``.

    A batch is ``(images (B, 1, S, S) standardised, labels (B,))``; the loss is the cross-entropy
    and the metric ``accuracy``. Returns an :class:`attnkit.train.Recipe`.
    """
    from attnkit.data.images import image_splits
    from attnkit.train.recipe import Recipe

    if data is not None:
        raise ValueError(f"task {name!r} uses its bundled digits; data must be None, got {data}")
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {list(ATTENTIONS)}, got {attention!r}")
    options = dict(options)
    if "width" in options:
        options["embed_dim"] = options.pop("width")
    known = {f.name for f in fields(ViTConfig)} - {"attention", "image_size", "channels"}
    known |= {*_SPLIT_OPTIONS, *_LOSS_OPTIONS, "width"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for task {name!r}; supported: {sorted(known)}"
        )
    split_args = {k: options.pop(k) for k in _SPLIT_OPTIONS if k in options}
    label_smoothing = float(options.pop("label_smoothing", 0.0))
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    kind = options.pop("model", "vit")
    if kind not in ("vit", "cnn"):
        raise ValueError(f"model must be 'vit' or 'cnn', got {kind!r}")
    if kind == "cnn" and attention != "none":
        raise ValueError(f"model='cnn' has no attention; use attention='none', got {attention!r}")

    splits = image_splits(name, seed=seed, fraction=fraction, **split_args)
    config = ViTConfig(**{**_DEFAULTS[name], **options, "attention": attention})
    torch.manual_seed(seed)
    model: nn.Module = ViT(config)
    if kind == "cnn":
        config = matched_cnn(replace(config, attention="multihead"))
        torch.manual_seed(seed)
        model = ConvNet(config)

    def loss(model: nn.Module, batch: Any) -> Tensor:
        images, labels = batch
        return F.cross_entropy(model(images).logits, labels, label_smoothing=label_smoothing)

    @torch.no_grad()
    def metrics(model: nn.Module, batch: Any) -> dict[str, float]:
        images, labels = batch
        return {"accuracy": float((model(images).logits.argmax(-1) == labels).float().mean())}

    return Recipe(name, model, splits.train, splits.val, splits.test, loss, metrics, config)


def mnist_recipe(
    attention: str = "multihead",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """5,000 MNIST digits, a ViT with 16 patches of 7x7 (:func:`image_recipe`)."""
    return image_recipe("mnist", attention, seed, fraction, data, **options)


def digits_recipe(
    attention: str = "multihead",
    seed: int = 0,
    fraction: float = 1.0,
    data: Path | None = None,
    **options: Any,
) -> Recipe:
    """scikit-learn's 1,797 8x8 digits, a ViT with 16 patches of 2x2 (:func:`image_recipe`)."""
    return image_recipe("digits", attention, seed, fraction, data, **options)
