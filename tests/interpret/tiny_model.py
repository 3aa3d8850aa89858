"""A tiny two-layer attention model and its forward written out by hand (the tests' oracle)."""

import torch.nn.functional as F
from torch import nn

from attnkit import MultiHeadAttention

E, H, N = 16, 4, 5


class Tiny(nn.Module):
    """Two self-attention layers with residuals; the class is read from token 0."""

    def __init__(self):
        super().__init__()
        self.first = MultiHeadAttention(E, H)
        self.second = MultiHeadAttention(E, H)
        self.classify = nn.Linear(E, 3)

    def forward(self, x):
        x = x + self.first(x).output
        x = x + self.second(x).output
        return self.classify(x[:, 0])


def manual_forward(model, x, head_mask=None):
    """The same forward written out, exposing each layer's weights and a head mask ξ."""
    weights = []
    for i, layer in enumerate((model.first, model.second)):
        q, k, v = F.linear(x, layer.in_proj_weight, layer.in_proj_bias).split(E, -1)
        q, k, v = (t.view(x.shape[0], N, H, E // H).transpose(1, 2) for t in (q, k, v))
        a = (q @ k.transpose(-1, -2) / (E // H) ** 0.5).softmax(-1)  # (B, H, N, N)
        weights.append(a)
        heads = a @ v  # (B, H, N, D)
        if head_mask is not None:
            heads = heads * head_mask[i][None, :, None, None]
        x = x + layer.out_proj(heads.transpose(1, 2).reshape(x.shape[0], N, E))
    return model.classify(x[:, 0]), weights
