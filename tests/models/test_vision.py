"""ViT, its mean-mixing and hard top-k variants, the matched CNN, and the image recipes."""

import pytest
import torch
import torch.nn.functional as F

from attnkit.attention.multihead import MultiHeadAttention
from attnkit.models.blocks import MeanMixing
from attnkit.models.glimpse import ConvNet
from attnkit.models.vision import ViT, ViTConfig
from attnkit.tasks import digits_recipe, matched_cnn, mnist_recipe
from attnkit.train import count_parameters

SMALL = ViTConfig(image_size=8, patch_size=2, embed_dim=16, depth=2, num_heads=4)


def _images(batch=3, side=8, seed=0):
    return torch.randn(batch, 1, side, side, generator=torch.Generator().manual_seed(seed))


def _vit(attention="multihead", **kwargs):
    torch.manual_seed(0)
    return ViT(ViTConfig(**{**SMALL.__dict__, "attention": attention, **kwargs})).eval()


def test_patch_tokens_are_linear_maps_of_row_major_patches_plus_positions():
    vit = _vit()
    images = _images()
    tokens = vit.embed(images)
    assert SMALL.patches == 16 and tokens.shape == (3, 17, 16)
    weight = vit.patch_embed.weight.flatten(1)  # (E, 4)
    for index in (0, 5, 15):
        row, col = divmod(index, 4)
        pixels = images[:, 0, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2].flatten(1)  # (B, 4)
        expected = pixels @ weight.T + vit.patch_embed.bias + vit.pos_embed[0, 1 + index]
        torch.testing.assert_close(tokens[:, 1 + index], expected)


def test_class_token_is_the_same_learned_vector_for_every_image():
    vit = _vit()
    tokens = vit.embed(_images())
    expected = (vit.cls_token + vit.pos_embed[:, :1])[0, 0]
    torch.testing.assert_close(tokens[:, 0], expected.expand(3, -1))


def test_logits_and_per_layer_attention_weights():
    vit = _vit()
    out = vit(_images(), need_weights=True)
    assert out.logits.shape == (3, 10) and out.selected is None
    assert len(out.weights) == 2
    for weights in out.weights:
        assert weights.shape == (3, 4, 17, 17)  # (B, H, 1 + P, 1 + P)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 17))
    assert vit(_images()).weights is None
    torch.testing.assert_close(vit(_images()).logits, out.logits)


def test_mean_mixing_ablation_has_no_attention_and_uniform_weights():
    vit = _vit("none")
    assert not any(isinstance(m, MultiHeadAttention) for m in vit.modules())
    assert sum(isinstance(m, MeanMixing) for m in vit.modules()) == 2
    out = vit(_images(), need_weights=True)
    torch.testing.assert_close(out.weights[0], torch.full((3, 1, 17, 17), 1 / 17))


def test_hard_variant_reads_only_the_selected_patches():
    vit = _vit("hard", select=3)
    images = _images()
    out = vit(images, need_weights=True)
    assert out.selected.shape == (3, 3)
    assert all(len(set(row.tolist())) == 3 for row in out.selected)
    assert out.weights[0].shape == (3, 4, 4, 4)  # class token + 3 patches
    # nudge one patch that was not read, small enough to keep the selection
    row, col = next(divmod(p, 4) for p in range(16) if p not in out.selected[0].tolist())
    nudged = images.clone()
    nudged[0, 0, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2] += 1e-3
    again = vit(nudged)
    assert torch.equal(again.selected, out.selected)
    torch.testing.assert_close(again.logits, out.logits)
    moved = images.clone()  # a patch that was read changes the prediction
    row, col = divmod(int(out.selected[0, 0]), 4)
    moved[0, 0, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2] += 1e-3
    assert (vit(moved).logits[0] - out.logits[0]).abs().max() > 0


def test_hard_selection_gets_a_gradient_through_the_straight_through_weights():
    vit = _vit("hard", select=3).train()
    vit(_images()).logits.sum().backward()
    assert vit.patch_embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", ["multihead", "none", "hard", "cnn"])
def test_loss_falls_on_a_tiny_slice(variant):
    attention = "none" if variant == "cnn" else variant
    options = {"model": "cnn"} if variant == "cnn" else {}
    recipe = digits_recipe(attention, seed=0, **options)
    batch = [t[:64] for t in recipe.train.tensors]
    optimizer = torch.optim.Adam(recipe.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = recipe.loss(recipe.model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.parametrize("recipe", [mnist_recipe, digits_recipe])
def test_parameter_budgets_match(recipe):
    vit = recipe("multihead").model
    mean = recipe("none").model
    cnn = recipe("none", model="cnn").model
    assert isinstance(cnn, ConvNet)
    target = count_parameters(vit)
    config = vit.config
    assert 0 <= target - count_parameters(mean) <= config.embed_dim * config.depth
    assert abs(count_parameters(cnn) - target) <= 0.01 * target
    assert count_parameters(recipe("hard").model) == target  # the scaled dot score has no weights


def test_matched_cnn_width_grows_with_the_vit():
    small = matched_cnn(SMALL)
    large = matched_cnn(ViTConfig(image_size=8, patch_size=2, embed_dim=64, depth=4))
    assert large.channels[0] > small.channels[0]
    assert small.canvas == 8 and small.classes == 10


def test_recipe_options_reach_the_model_and_the_loss():
    recipe = digits_recipe(
        "multihead", patch_size=4, depth=3, width=24, num_heads=3, dropout=0.1,
        head_dropout=0.25, attention_dropout=0.05, label_smoothing=0.2,
    )  # fmt: skip
    config = recipe.config
    assert (config.patches, config.depth, config.embed_dim) == (4, 3, 24)
    attn = recipe.model.blocks[0].attn
    assert (attn.num_heads, attn.dropout, attn.head_dropout) == (3, 0.05, 0.25)
    recipe.model.eval()
    images, labels = (t[:32] for t in recipe.train.tensors)
    logits = recipe.model(images).logits
    expected = F.cross_entropy(logits, labels, label_smoothing=0.2)
    torch.testing.assert_close(recipe.loss(recipe.model, (images, labels)), expected)
    assert 0.0 <= recipe.metrics(recipe.model, (images, labels))["accuracy"] <= 1.0


def test_recipe_fraction_and_seed():
    full, small = digits_recipe("none", seed=1), digits_recipe("none", seed=1, fraction=0.05)
    assert len(small.train) < 0.06 * len(full.train)
    assert len(small.test) == len(full.test)
    torch.testing.assert_close(
        digits_recipe("none", seed=1).model(_images()).logits, full.model(_images()).logits
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attention": "soft"}, "multihead"),
        ({"attention": "multihead", "model": "cnn"}, "attention='none'"),
        ({"attention": "none", "model": "rnn"}, "model"),
        ({"attention": "none", "colour": 1}, "colour"),
        ({"attention": "none", "label_smoothing": 1.0}, "label_smoothing"),
        ({"attention": "none", "patch_size": 3}, "patch_size"),
        ({"attention": "none", "data": "digits.csv"}, "data"),
    ],
)
def test_bad_recipe_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        digits_recipe(**kwargs)


def test_bad_config_and_images():
    with pytest.raises(ValueError, match="select"):
        ViTConfig(image_size=8, patch_size=4, attention="hard", select=5)
    with pytest.raises(ValueError, match="divisible"):
        ViTConfig(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="images"):
        _vit()(_images(side=10))


def test_the_trainer_trains_a_recipe_from_the_task_table():
    from attnkit.tasks import load_recipe
    from attnkit.train import TrainConfig, Trainer

    recipe = load_recipe("digits", attention="multihead", seed=0)
    config = TrainConfig(epochs=5, max_steps=100, batch_size=32, lr=3e-3, progress=False)
    result = Trainer(recipe.model, config, loss=recipe.loss, metrics=recipe.metrics).fit(
        recipe.train, recipe.val, recipe.test
    )
    assert result.steps == 100
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.test["accuracy"] > 0.5
