"""Cluttered MNIST generator: shapes, seeds, clutter, and the digit lying whole on the canvas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnkit.data.cluttered import load_digits, make_cluttered, split_digits


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_bundled_digits(digits):
    images, labels = digits
    assert images.shape == (5000, 28, 28) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert np.array_equal(np.bincount(labels), np.full(10, 500))


def test_split_is_stratified_and_disjoint(digits):
    _, labels = digits
    train, test = split_digits(labels, test_fraction=0.2, seed=0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 5000
    assert np.array_equal(np.bincount(labels[test]), np.full(10, 100))
    assert np.array_equal(split_digits(labels, 0.2, seed=0)[1], test)
    assert not np.array_equal(split_digits(labels, 0.2, seed=1)[1], test)


def test_shapes_and_ranges(digits):
    images, labels = digits
    data = make_cluttered(images[:100], labels[:100], n=50, canvas=60, clutter=4, seed=0)
    assert len(data) == 50
    assert data.images.shape == (50, 1, 60, 60) and data.images.dtype == torch.float32
    assert data.labels.shape == (50,) and data.positions.shape == (50, 2)
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert set(data.labels.tolist()) <= set(labels[:100].tolist())


def test_seed_determinism(digits):
    images, labels = digits
    a = make_cluttered(images, labels, n=20, clutter=6, seed=3)
    b = make_cluttered(images, labels, n=20, clutter=6, seed=3)
    c = make_cluttered(images, labels, n=20, clutter=6, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_digit_lies_whole_inside_the_canvas(digits):
    images, labels = digits
    data = make_cluttered(images, labels, n=200, canvas=60, clutter=0, seed=1)
    rows, cols = data.positions.T
    assert rows.min() >= 0 and cols.min() >= 0 and rows.max() <= 32 and cols.max() <= 32
    assert rows.max() > 24 and rows.min() < 8  # positions spread over the canvas
    # Without clutter the canvas is exactly the digit, at its position, on black.
    for i in range(0, 200, 20):
        r, c = data.positions[i].tolist()
        crop = data.images[i, 0, r : r + 28, c : c + 28]
        ink = data.images[i, 0].sum()
        assert torch.isclose(crop.sum(), ink)
        assert any(
            np.array_equal(crop.numpy(), images[j])
            for j in np.flatnonzero(labels == data.labels[i].item())
        )


def test_digit_survives_heavy_clutter(digits):
    images, labels = digits
    clean = make_cluttered(images, labels, n=30, clutter=0, seed=2)
    noisy = make_cluttered(images, labels, n=30, clutter=16, seed=2)
    assert torch.equal(clean.positions, noisy.positions) and torch.equal(clean.labels, noisy.labels)
    assert (noisy.images >= clean.images).all()  # clutter is max-combined, never erases ink


def test_more_clutter_adds_ink_outside_the_digit(digits):
    images, labels = digits
    outside = []
    for clutter in (0, 4, 16):
        data = make_cluttered(images, labels, n=100, clutter=clutter, seed=5)
        ink = data.images[:, 0].clone()
        for i, (r, c) in enumerate(data.positions.tolist()):
            ink[i, r : r + 28, c : c + 28] = 0
        outside.append(ink.sum().item() / 100)
    assert outside[0] == 0.0
    assert outside[1] > 5.0  # a fragment carries several pixels' worth of ink
    assert outside[2] > 2.5 * outside[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"canvas": 20}, "canvas must be >= 28"),
        ({"clutter": -1}, "clutter must be >= 0"),
        ({"fragment": 0}, "fragment must be in 1..28"),
    ],
)
def test_bad_arguments(digits, kwargs, message):
    images, labels = digits
    with pytest.raises(ValueError, match=message):
        make_cluttered(images[:10], labels[:10], n=2, **kwargs)
    with pytest.raises(ValueError, match="images must be"):
        make_cluttered(images[:10, :20], labels[:10], n=2)
