"""Recurrent glimpse models for images (Mnih et al. 2014, "Recurrent Models of Visual Attention").

The canvas is covered by a grid of ``L`` candidate glimpse locations. A glimpse at a location is a
multi-scale retina: ``scales`` square windows centred on it, of side ``patch · 2^s``, each
average-pooled to ``patch x patch``. A GRU core reads one glimpse per step; its state is the query
of an attention over learned location keys that picks the next location; a linear layer
classifies from the state after every glimpse (the prediction is the one after the last; the
cross-entropy is averaged over all of them, which speeds up training of the core). A glimpse is
encoded as ``relu(what(retina) + where[location])`` with ``what`` a small CNN over the scales.

- :class:`GlimpseNetwork` with ``attention="reinforce"``, ``"gumbel"`` or ``"topk"`` chooses each
  location with :class:`~attnkit.attention.hard.HardAttention` and reads only the chosen windows.
  Already visited locations are masked. ``"reinforce"`` trains the locator with the hybrid loss
  of Mnih et al. (cross-entropy for the classifier and core, REINFORCE with reward "correct at
  the end" for the locations); its query is the *detached* state, so the high-variance
  REINFORCE gradient trains the locator only, not the core. ``"gumbel"`` and ``"topk"``
  backpropagate through a straight-through estimator, which needs the encodings of *all*
  locations while training (in eval mode they too read only the chosen windows).
- ``attention="soft"`` replaces it with :class:`~attnkit.attention.soft.SoftAttention` over the
  encodings of all locations: it reads the whole canvas at every step.
- :class:`ConvNet` is a plain CNN of similar size, the no-attention reference.

Training and evaluation (:func:`attnkit.tasks.glimpse.train_classifier`, ``evaluate``) are in
:mod:`attnkit.tasks.glimpse`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit._moved import moved_name
from attnkit.attention.hard import ESTIMATORS, HardAttention
from attnkit.attention.hard_training import MovingAverageBaseline, reinforce_loss
from attnkit.attention.soft import SoftAttention

__all__ = [
    "ConvConfig",
    "ConvNet",
    "GlimpseConfig",
    "GlimpseNetwork",
    "GlimpseResult",
]

ATTENTIONS = (*sorted(ESTIMATORS), "soft")


@dataclass(frozen=True)
class GlimpseConfig:
    canvas: int = 60  # side of the square input image in pixels
    patch: int = 12  # side of the finest retina window; every scale is pooled to patch x patch
    stride: int = 8  # spacing of glimpse locations; a multiple of 2^(scales-1)
    scales: int = 3  # retina windows per glimpse, of side patch·2^s for s = 0..scales-1
    glimpses: int = 4  # glimpses taken before classifying
    hidden: int = 128  # size of the GRU state (the attention query) and of every encoding
    attention: str = "reinforce"  # "reinforce", "gumbel", "topk" (HardAttention) or "soft"
    classes: int = 10  # output classes
    entropy_weight: float = 0.01  # entropy bonus of the REINFORCE loss (Xu et al. 2015)
    baseline_momentum: float = 0.9  # moving-average reward baseline (Xu et al. 2015)

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {list(ATTENTIONS)}, got {self.attention!r}")
        if self.patch < 1 or self.patch > self.canvas:
            raise ValueError(f"patch must be in 1..canvas={self.canvas}, got {self.patch}")
        if (self.canvas - self.patch) % self.stride:
            raise ValueError(
                f"stride must divide canvas - patch = {self.canvas - self.patch}, got {self.stride}"
            )
        if self.scales < 1 or (self.scales > 1 and self.patch % 2):
            raise ValueError(
                f"scales must be >= 1 (and patch even when scales > 1), got scales={self.scales}, "
                f"patch={self.patch}"
            )
        if self.stride % 2 ** (self.scales - 1):
            raise ValueError(
                f"stride must be a multiple of 2^(scales-1) = {2 ** (self.scales - 1)}, "
                f"got {self.stride}"
            )
        if self.glimpses < 1 or self.glimpses > self.locations:
            raise ValueError(f"glimpses must be in 1..{self.locations}, got {self.glimpses}")

    @property
    def side(self) -> int:
        """Candidate locations per row (and column) of the grid."""
        return (self.canvas - self.patch) // self.stride + 1

    @property
    def locations(self) -> int:
        """``L``, the number of candidate glimpse locations."""
        return self.side**2

    @property
    def values_per_glimpse(self) -> int:
        """Numbers one glimpse reads: ``scales · patch²`` (a pooled pixel counts as one)."""
        return self.scales * self.patch**2


@dataclass(frozen=True)
class GlimpseResult:
    """What a glimpse network computed for a batch of images.

    Attributes:
        logits: ``(B, C)`` class scores after the last glimpse.
        step_logits: ``(B, N, C)`` class scores after each glimpse (the last is ``logits``).
        locations: ``(B, N)`` int64, the location index read at each of the ``N`` glimpses
            (for ``"soft"``, the location with the largest weight).
        log_prob: ``(B, N)`` log-probability of each chosen location (hard attention only).
        entropy: ``(B, N)`` entropy of each location distribution (hard attention only).
    """

    logits: Tensor
    step_logits: Tensor
    locations: Tensor
    log_prob: Tensor | None = None
    entropy: Tensor | None = None


def retina(images: Tensor, config: GlimpseConfig) -> Tensor:
    """Every location's multi-scale glimpse: ``(B, L, scales·patch²)``.

    Scale ``s`` is the window of side ``patch·2^s`` centred on the location's finest patch,
    average-pooled by ``2^s`` (zero outside the canvas). Because ``stride`` is a multiple of
    ``2^(scales-1)``, each scale is one non-overlapping pooling of the canvas and an unfold.

    Args:
        images: ``(B, 1, S, S)`` with ``S = config.canvas``.
    """
    if images.ndim != 4 or images.shape[1:] != (1, config.canvas, config.canvas):
        raise ValueError(
            f"images must be (B, 1, {config.canvas}, {config.canvas}), got {tuple(images.shape)}"
        )
    patch, side, top = config.patch, config.side, 2 ** (config.scales - 1)
    pad = patch * (top - 1) // 2
    padded = F.pad(images, (pad, pad, pad, pad))  # (B, 1, S + 2 pad, S + 2 pad)
    views = []
    for s in range(config.scales):
        f = 2**s
        start = patch * (top - f) // 2  # corner of location 0's window, a multiple of f
        pooled = (
            F.avg_pool2d(padded[:, :, start:, start:], f) if f > 1 else padded[:, :, start:, start:]
        )
        cols = F.unfold(pooled, patch, stride=config.stride // f)  # (B, patch², n·n)
        n = math.isqrt(cols.shape[-1])
        cols = cols.reshape(len(images), patch * patch, n, n)[:, :, :side, :side]
        views.append(cols.flatten(2).transpose(1, 2))  # (B, L, patch²)
    return torch.cat(views, dim=-1)  # (B, L, scales·patch²)


def window_masks(config: GlimpseConfig) -> Tensor:
    """``(L, S, S)`` boolean: the canvas pixels inside some retina window of each location."""
    covered = torch.zeros(config.locations, config.canvas, config.canvas, dtype=torch.bool)
    largest = config.patch * 2 ** (config.scales - 1)
    for index in range(config.locations):
        row, col = divmod(index, config.side)
        r = row * config.stride + config.patch // 2 - largest // 2
        c = col * config.stride + config.patch // 2 - largest // 2
        covered[index, max(r, 0) : r + largest, max(c, 0) : c + largest] = True
    return covered


class GlimpseNetwork(nn.Module):
    """Recurrent attention model over a grid of glimpse locations (Mnih et al. 2014).

    Args:
        config: a :class:`GlimpseConfig`; ``config.attention`` picks hard or soft attention.

    ``forward(images (B, 1, S, S)) -> GlimpseResult``.
    """

    def __init__(self, config: GlimpseConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden
        side = -(-config.patch // 4)  # after two stride-2 convolutions
        self.what = nn.Sequential(  # glimpse content; the scales are the input channels
            nn.Conv2d(config.scales, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * side * side, hidden),
        )
        self.where = nn.Embedding(config.locations, hidden)  # glimpse location
        nn.init.normal_(self.where.weight, std=0.02)  # N(0, 1) would drown the content
        self.location_keys = nn.Parameter(torch.randn(config.locations, hidden) / hidden**0.5)
        self.core = nn.GRUCell(hidden, hidden)
        self.classifier = nn.Linear(hidden, config.classes)
        if config.attention == "soft":
            self.locator: nn.Module = SoftAttention(hidden, hidden, score="additive")
        else:
            self.locator = HardAttention(hidden, hidden, "additive", estimator=config.attention)
            self.baseline = MovingAverageBaseline(config.baseline_momentum)

    @property
    def hard(self) -> bool:
        return self.config.attention != "soft"

    def encode(self, glimpses: Tensor, locations: Tensor) -> Tensor:
        """Glimpse vectors ``relu(what(glimpse) + W_where[location])``, ``(..., hidden)``;
        ``what`` is a small CNN over the retina's scales.

        Args:
            glimpses: ``(..., scales·patch²)``.
            locations: ``(...)`` int64 location indices.
        """
        patches = glimpses.reshape(-1, self.config.scales, self.config.patch, self.config.patch)
        content = self.what(patches).reshape(*glimpses.shape[:-1], -1)  # (..., hidden)
        return torch.relu(content + self.where(locations))

    def forward(self, images: Tensor) -> GlimpseResult:
        batch = len(images)
        views = retina(images, self.config)  # (B, L, V)
        all_locations = torch.arange(self.config.locations, device=images.device)
        keys = self.location_keys.expand(batch, -1, -1)  # (B, L, H)
        # Straight-through estimators and soft attention need every location's encoding.
        read_all = not self.hard or (self.training and self.config.attention != "reinforce")
        encoded = self.encode(views, all_locations) if read_all else None  # (B, L, H)
        unvisited = torch.ones(batch, self.config.locations, dtype=torch.bool, device=images.device)
        state = images.new_zeros(batch, self.config.hidden)  # (B, H)
        chosen, step_logits, log_probs, entropies = [], [], [], []
        for _ in range(self.config.glimpses):
            mask = unvisited if self.hard else None
            query = state.detach() if self.config.attention == "reinforce" else state
            out = self.locator(query, keys, encoded if read_all else keys, mask=mask)
            location = out.weights.argmax(-1)  # (B,)
            if read_all:
                glimpse = out.output  # (B, H)
            else:
                view = views[torch.arange(batch), location]  # (B, V): the only pixels read
                glimpse = self.encode(view, location)
            state = self.core(glimpse, state)
            step_logits.append(self.classifier(state))
            chosen.append(location)
            if self.hard:
                log_probs.append(out.log_prob)
                entropies.append(out.entropy)
                unvisited = unvisited.scatter(1, location[:, None], False)
        step_logits = torch.stack(step_logits, 1)  # (B, N, C)
        locations = torch.stack(chosen, 1)  # (B, N)
        if not self.hard:
            return GlimpseResult(step_logits[:, -1], step_logits, locations)
        return GlimpseResult(
            step_logits[:, -1],
            step_logits,
            locations,
            torch.stack(log_probs, 1),
            torch.stack(entropies, 1),
        )

    def loss(self, result: GlimpseResult, labels: Tensor) -> Tensor:
        """Cross-entropy after every glimpse (averaged over glimpses and batch).

        For ``"reinforce"``, plus the REINFORCE loss of the locations with reward 1 when the
        final prediction is correct (the hybrid loss of Mnih et al. 2014), a moving-average
        baseline and an entropy bonus (Xu et al. 2015).
        """
        steps = result.step_logits.shape[1]
        loss = F.cross_entropy(result.step_logits.flatten(0, 1), labels.repeat_interleave(steps))
        if self.config.attention == "reinforce":
            reward = (result.logits.argmax(-1) == labels).float()  # (B,)
            loss = loss + reinforce_loss(
                result.log_prob,
                reward,
                self.baseline(reward),
                result.entropy,
                self.config.entropy_weight,
            )
        return loss

    def pixels_read(self, locations: Tensor) -> tuple[int, Tensor]:
        """What a batch of glimpse paths read.

        Args:
            locations: ``(B, N)`` from :class:`GlimpseResult`.

        Returns:
            ``(values, covered)``: the numbers read per image (``N · scales · patch²``, a pooled
            pixel counting as one; ``S²`` for soft attention, which encodes every location) and
            ``(B,)`` the fraction of canvas pixels inside some window of the path (1 for soft).
        """
        if not self.hard:
            return self.config.canvas**2, torch.ones(len(locations))
        masks = window_masks(self.config).to(locations.device)[locations]  # (B, N, S, S)
        covered = masks.any(1).flatten(1).float().mean(1)  # (B,)
        return locations.shape[1] * self.config.values_per_glimpse, covered


@dataclass(frozen=True)
class ConvConfig:
    canvas: int = 60  # side of the square input image in pixels
    channels: tuple[int, ...] = (32, 64, 128)  # output channels of the stride-2 conv layers
    hidden: int = 128  # width of the fully connected layer after global max-pooling
    classes: int = 10  # output classes


class ConvNet(nn.Module):
    """A plain CNN (no attention): stride-2 convolutions, global max-pool, two linear layers.

    ``forward(images (B, 1, S, S)) -> GlimpseResult`` with empty ``locations`` ``(B, 0)``, so it
    trains and evaluates like a :class:`GlimpseNetwork`; it reads every pixel.
    """

    def __init__(self, config: ConvConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels_in = 1
        for i, channels in enumerate(config.channels):
            kernel = 5 if i == 0 else 3
            layers += [nn.Conv2d(channels_in, channels, kernel, 2, kernel // 2), nn.ReLU()]
            channels_in = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(channels_in, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.classes),
        )

    def forward(self, images: Tensor) -> GlimpseResult:
        pooled = self.features(images).amax(dim=(2, 3))  # (B, C_last)
        empty = torch.zeros(len(images), 0, dtype=torch.long, device=images.device)
        logits = self.head(pooled)  # (B, C)
        return GlimpseResult(logits, logits[:, None], empty)

    def loss(self, result: GlimpseResult, labels: Tensor) -> Tensor:
        """Cross-entropy."""
        return F.cross_entropy(result.logits, labels)

    def pixels_read(self, locations: Tensor) -> tuple[int, Tensor]:
        """Every pixel: ``(S², ones (B,))``."""
        return self.config.canvas**2, torch.ones(len(locations))


def __getattr__(name: str):
    return moved_name(__name__, name)  # training and evaluation moved to attnkit.tasks.glimpse
