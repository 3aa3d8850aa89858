"""Digit image loaders: real data, stratified seeded splits, train-only standardisation."""

import numpy as np
import pytest
import torch

from attnkit.data.images import image_splits, load_images, stratified_split


def test_sklearn_digits_are_the_real_1797_images_in_unit_range():
    images, labels = load_images("digits")
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_mnist_is_the_5000_bundled_digits():
    images, labels = load_images("mnist")
    assert images.shape == (5000, 28, 28)
    assert np.bincount(labels).tolist() == [500] * 10


def test_splits_are_disjoint_stratified_and_deterministic_by_seed():
    labels = np.repeat(np.arange(10), 100)
    train, val, test = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert (len(train), len(val), len(test)) == (700, 100, 200)
    assert len(np.unique(np.concatenate([train, val, test]))) == 1000
    for part, per_class in ((train, 70), (val, 10), (test, 20)):
        assert np.bincount(labels[part]).tolist() == [per_class] * 10
    again = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=3)
    other = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not np.array_equal(test, other[2])


def test_fraction_keeps_class_balance_and_leaves_val_and_test_alone():
    labels = np.repeat(np.arange(10), 100)
    full = stratified_split(labels, seed=0)
    small = stratified_split(labels, seed=0, fraction=0.05)
    assert np.bincount(labels[small[0]]).tolist() == [4] * 10  # 5% of 70, rounded
    assert set(small[0]) <= set(full[0])
    assert np.array_equal(small[1], full[1]) and np.array_equal(small[2], full[2])
    tiny = stratified_split(labels, seed=0, fraction=0.001)
    assert np.bincount(labels[tiny[0]]).tolist() == [1] * 10  # at least one per class


def test_image_splits_standardise_with_the_training_split_only():
    splits = image_splits("digits", seed=0, fraction=0.5)
    x_train, y_train = splits.train.tensors
    x_test, _ = splits.test.tensors
    assert x_train.shape[1:] == (1, 8, 8) and splits.side == 8 and splits.classes == 10
    assert abs(float(x_train.mean())) < 1e-5 and abs(float(x_train.std()) - 1) < 1e-3
    assert abs(float(x_test.mean())) > 1e-4  # test pixels are not re-centred on themselves
    images, labels = load_images("digits")
    train, _, test = stratified_split(labels, seed=0, fraction=0.5)
    expected = torch.from_numpy((images[test] - splits.mean) / splits.std)[:, None]
    torch.testing.assert_close(x_test, expected)
    assert torch.equal(y_train, torch.from_numpy(labels[train]))
    assert np.bincount(y_train.numpy()).min() >= 60


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction"),
        ({"fraction": 0.0}, "fraction"),
    ],
)
def test_bad_split_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stratified_split(np.repeat(np.arange(3), 10), **kwargs)


def test_unknown_set_lists_the_known_ones():
    with pytest.raises(ValueError, match="mnist"):
        load_images("cifar")
