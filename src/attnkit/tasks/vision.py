"""The image-classification tasks (MNIST-5k, scikit-learn digits) for a
:class:`~attnkit.models.vision.ViT`, its mean-mixing ablation, hard patch selection, and a
:class:`~attnkit.models.glimpse.ConvNet` matched to the ViT's parameter count."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.models.glimpse import ConvConfig, ConvNet
from attnkit.models.vision import ATTENTIONS, ViT, ViTConfig
from attnkit.tasks.recipe import Recipe
from attnkit.train.parameters import count_parameters

__all__ = ["digits_recipe", "image_recipe", "matched_cnn", "mnist_recipe"]


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
        options: :class:`~attnkit.models.vision.ViTConfig` fields (``patch_size``, ``depth``,
            ``embed_dim``, ``num_heads``, ``dropout``, ``attention_dropout``, ``head_dropout``,
            ...),
            ``width`` (an alias of ``embed_dim``), ``label_smoothing`` (of the cross-entropy),
            ``model`` (``"vit"`` or ``"cnn"``: the :func:`matched_cnn` baseline, needs
            ``attention="none"``), ``val_fraction`` and ``test_fraction``.

    A batch is ``(images (B, 1, S, S) standardised, labels (B,))``; the loss is the cross-entropy
    and the metric ``accuracy``. Returns a :class:`~attnkit.tasks.Recipe`.
    """
    from attnkit.data.images import image_splits

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
