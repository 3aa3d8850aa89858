"""TransformerBlock vs PyTorch's pre-norm encoder layer; masks, causality, DropHead, MeanMixing."""

import pytest
import torch
from torch import nn

from attnkit.attention.multihead import MultiHeadAttention
from attnkit.models.blocks import BlockConfig, MeanMixing, TransformerBlock

CONFIG = BlockConfig(embed_dim=16, num_heads=4, mlp_ratio=2.0)


def _x(batch=3, tokens=7, dim=16, seed=0):
    return torch.randn(batch, tokens, dim, generator=torch.Generator().manual_seed(seed))


def _torch_twin(block: TransformerBlock) -> nn.TransformerEncoderLayer:
    """``nn.TransformerEncoderLayer(norm_first=True, gelu)`` holding the block's weights."""
    c = block.config
    layer = nn.TransformerEncoderLayer(
        c.embed_dim, c.num_heads, c.mlp_hidden, dropout=0.0, activation="gelu",
        batch_first=True, norm_first=True,
    ).eval()  # fmt: skip
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(block.attn.in_proj_weight)
        layer.self_attn.in_proj_bias.copy_(block.attn.in_proj_bias)
        layer.self_attn.out_proj.load_state_dict(block.attn.out_proj.state_dict())
        layer.norm1.load_state_dict(block.norm1.state_dict())
        layer.norm2.load_state_dict(block.norm2.state_dict())
        layer.linear1.load_state_dict(block.mlp[0].state_dict())
        layer.linear2.load_state_dict(block.mlp[2].state_dict())
    return layer


def test_block_equals_pytorch_pre_norm_encoder_layer_with_and_without_padding():
    torch.manual_seed(0)
    block = TransformerBlock(CONFIG).eval()
    twin = _torch_twin(block)
    x = _x()
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[1, 4:] = False
    keep[2, 6:] = False
    with torch.no_grad():
        torch.testing.assert_close(block(x).output, twin(x))
        ours = block(x, mask=keep).output
        theirs = twin(x, src_key_padding_mask=~keep)
    torch.testing.assert_close(ours[keep], theirs[keep])


def test_weights_are_returned_per_head_and_padded_keys_get_none():
    torch.manual_seed(0)
    block = TransformerBlock(CONFIG).eval()
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[0, 5:] = False
    out = block(_x(), mask=keep, need_weights=True)
    assert out.weights.shape == (3, 4, 7, 7)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(3, 4, 7))
    assert out.weights[0, :, :, 5:].abs().max() == 0
    assert block(_x()).weights is None


def test_padded_tokens_do_not_change_the_others():
    torch.manual_seed(0)
    block = TransformerBlock(CONFIG).eval()
    x = _x()
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[:, 5:] = False
    changed = x.clone()
    changed[:, 5:] = 100.0
    torch.testing.assert_close(
        block(x, mask=keep).output[:, :5], block(changed, mask=keep).output[:, :5]
    )


def test_causal_block_output_ignores_later_tokens():
    torch.manual_seed(0)
    block = TransformerBlock(BlockConfig(16, 4, causal=True)).eval()
    x = _x()
    later = x.clone()
    later[:, 4:] = torch.randn(3, 3, 16)
    a, b = block(x).output, block(later).output
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3


def test_dropouts_reach_the_attention_and_act_in_training_only():
    torch.manual_seed(0)
    config = BlockConfig(16, 4, dropout=0.1, attention_dropout=0.2, head_dropout=0.5)
    block = TransformerBlock(config)
    assert isinstance(block.attn, MultiHeadAttention)
    assert (block.attn.dropout, block.attn.head_dropout) == (0.2, 0.5)
    x = _x()
    assert (block(x).output - block(x).output).abs().max() > 1e-3  # training: random
    block.eval()
    torch.testing.assert_close(block(x).output, block(x).output, rtol=0, atol=0)


def test_mean_mixing_is_the_projected_mean_of_the_allowed_tokens():
    torch.manual_seed(0)
    mix = MeanMixing(16)
    x = _x()
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[1, 3:] = False
    out = mix(x, mask=keep, need_weights=True)
    values = mix.value(x)
    expected = torch.stack([values[0].mean(0), values[1, :3].mean(0), values[2].mean(0)])
    torch.testing.assert_close(out.output, mix.out_proj(expected)[:, None].expand(3, 7, 16))
    assert out.weights.shape == (3, 1, 7, 7)
    torch.testing.assert_close(out.weights[1, 0, 0], torch.tensor([1 / 3] * 3 + [0.0] * 4))
    causal = MeanMixing(16, causal=True)
    torch.testing.assert_close(
        causal(x).output[:, 2], causal.out_proj(causal.value(x)[:, :3].mean(1))
    )


def test_block_accepts_mean_mixing_as_its_mixer():
    torch.manual_seed(0)
    block = TransformerBlock(CONFIG, mixer=MeanMixing(16))
    out = block(_x(), need_weights=True)
    assert out.output.shape == (3, 7, 16)
    torch.testing.assert_close(out.weights, torch.full((3, 1, 7, 7), 1 / 7))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embed_dim": 10, "num_heads": 4}, "divisible"),
        ({"embed_dim": 0, "num_heads": 1}, "embed_dim"),
        ({"embed_dim": 8, "num_heads": 2, "dropout": 1.0}, "dropout"),
        ({"embed_dim": 8, "num_heads": 2, "head_dropout": -0.1}, "head_dropout"),
        ({"embed_dim": 8, "num_heads": 2, "mlp_ratio": 0.0}, "mlp_ratio"),
    ],
)
def test_bad_config_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlockConfig(**kwargs)


def test_block_wants_a_config():
    with pytest.raises(TypeError, match="BlockConfig"):
        TransformerBlock(16)
