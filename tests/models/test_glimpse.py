"""Glimpse models: the retina against hand-made crops, that hard attention reads only its
glimpses, configuration errors, and a short training run that beats chance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.data.cluttered import load_digits, make_cluttered, split_digits
from attnkit.models.glimpse import (
    ConvConfig,
    ConvNet,
    GlimpseConfig,
    GlimpseNetwork,
    retina,
    window_masks,
)
from attnkit.tasks.glimpse import evaluate, train_classifier

HARD = ["reinforce", "gumbel", "topk"]


def test_retina_matches_crops_and_pooling_by_hand():
    config = GlimpseConfig(canvas=60, patch=12, stride=8, scales=3)
    images = torch.rand(2, 1, 60, 60, generator=torch.Generator().manual_seed(0))
    views = retina(images, config)
    assert views.shape == (2, 49, 3 * 144)
    padded = F.pad(images, (18, 18, 18, 18))  # the largest window is 48 = 12 + 2·18
    for location in (0, 10, 48):
        row, col = divmod(location, 7)
        r, c = 18 + 8 * row + 6, 18 + 8 * col + 6  # the patch centre, in padded coordinates
        for s, f in enumerate((1, 2, 4)):
            half = 6 * f
            window = padded[:, :, r - half : r + half, c - half : c + half]
            expected = F.avg_pool2d(window, f).flatten(1)  # (B, 144)
            torch.testing.assert_close(views[:, location, 144 * s : 144 * (s + 1)], expected)


def test_window_masks_cover_the_largest_scale():
    config = GlimpseConfig(canvas=60, patch=12, stride=8, scales=2)
    masks = window_masks(config)
    assert masks.shape == (49, 60, 60)
    # location 0: centre (6, 6), largest window 24 -> rows/cols -6..18, clipped to 0..18
    assert masks[0].sum() == 18 * 18 and masks[0, :18, :18].all()
    assert masks[24].sum() == 24 * 24  # the centre location lies wholly inside


@pytest.mark.parametrize("attention", HARD)
def test_hard_attention_reads_only_the_chosen_windows(attention):
    torch.manual_seed(1)
    config = GlimpseConfig(glimpses=3, hidden=32, attention=attention)
    model = GlimpseNetwork(config).eval()
    images = torch.rand(4, 1, 60, 60, generator=torch.Generator().manual_seed(2))
    result = model(images)
    assert result.logits.shape == (4, 10) and result.locations.shape == (4, 3)
    assert result.log_prob.shape == result.entropy.shape == (4, 3)
    for row in result.locations.tolist():
        assert len(set(row)) == 3  # visited locations are masked
    seen = window_masks(config)[result.locations].any(1)  # (B, S, S)
    changed = images.clone()
    changed[:, 0][~seen] = torch.rand(int((~seen).sum().item()))
    again = model(changed)
    assert torch.equal(again.locations, result.locations)
    assert torch.equal(again.logits, result.logits)
    # ...while a pixel of the first glimpse's finest patch does matter.
    row, col = divmod(result.locations[0, 0].item(), config.side)
    poked = images.clone()
    poked[0, 0, row * 8 : row * 8 + 12, col * 8 : col * 8 + 12] += 1.0
    assert not torch.equal(model(poked).logits[0], result.logits[0])
    values, covered = model.pixels_read(result.locations)
    assert values == 3 * 3 * 144
    torch.testing.assert_close(covered, seen.flatten(1).float().mean(1))


def test_soft_attention_and_cnn_read_everything():
    torch.manual_seed(3)
    images = torch.rand(2, 1, 60, 60)
    soft = GlimpseNetwork(GlimpseConfig(hidden=32, attention="soft")).eval()
    result = soft(images)
    assert result.log_prob is None and result.locations.shape == (2, 4)
    assert soft.pixels_read(result.locations)[0] == 3600
    cnn = ConvNet(ConvConfig(channels=(8, 16), hidden=16)).eval()
    result = cnn(images)
    assert result.logits.shape == (2, 10) and result.locations.shape == (2, 0)
    assert cnn.pixels_read(result.locations)[0] == 3600


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attention": "hardmax"}, r"attention must be one of \['gumbel', 'reinforce', 'topk'"),
        ({"stride": 7}, "stride must divide"),
        ({"stride": 6}, r"stride must be a multiple of 2\^\(scales-1\) = 4"),
        ({"patch": 11, "stride": 7}, "patch even"),
        ({"glimpses": 50}, "glimpses must be in 1..49"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GlimpseConfig(**kwargs)


def test_images_of_the_wrong_shape():
    model = GlimpseNetwork(GlimpseConfig(hidden=16))
    with pytest.raises(ValueError, match=r"images must be \(B, 1, 60, 60\)"):
        model(torch.zeros(2, 60, 60))


@pytest.fixture(scope="module")
def easy_data():
    """Digits on a 28 x 28 canvas (the digit fills it) without clutter, from disjoint digits."""
    images, labels = load_digits()
    train, test = split_digits(labels, test_fraction=0.2, seed=0)
    return (
        make_cluttered(images[train], labels[train], n=4000, canvas=28, clutter=0, seed=0),
        make_cluttered(images[test], labels[test], n=500, canvas=28, clutter=0, seed=1),
    )


@pytest.mark.parametrize("attention", ["reinforce", "gumbel", "soft", "cnn"])
def test_a_short_training_run_beats_chance(easy_data, attention):
    torch.manual_seed(4)
    train, test = easy_data
    if attention == "cnn":
        model = ConvNet(ConvConfig(canvas=28, channels=(8, 16, 32), hidden=32))
    else:
        config = GlimpseConfig(
            canvas=28, patch=12, stride=8, scales=2, glimpses=2, hidden=48, attention=attention
        )
        model = GlimpseNetwork(config)

    def batches(step):
        index = torch.arange(step * 32, step * 32 + 32) % len(train)
        return train.images[index], train.labels[index]

    losses = train_classifier(model, batches, steps=200, lr=3e-3)
    assert sum(losses[-20:]) < sum(losses[:20])
    accuracy = evaluate(model, test.images, test.labels)["accuracy"]
    assert accuracy > 0.3  # chance is 0.1
