"""An attention forecaster with quantile outputs, its no-attention twin, and two baselines.

The forecaster encodes the past window (a GRU, or attnkit transformer blocks), then each horizon
step forms a query (the last encoded state plus a learned horizon-step embedding) that attends over
the encoded lags, as in the temporal attention of the Temporal Fusion Transformer (Lim et al.
2021) and of attention RNN forecasters (Qin et al. 2017). A small head maps
``[last state, horizon embedding, attention context]`` to the quantiles, trained with the pinball
loss (Koenker & Bassett 1978). ``attention="none"`` is the same model without the context (and,
with the transformer encoder, with the blocks' attention replaced by the causal mean,
:class:`~attnkit.models.blocks.MeanMixing`), so it has no attention anywhere.

Baselines on the same windows: seasonal naive, and a linear autoregressive model fitted by least
squares; their quantiles come from the empirical quantiles of their training residuals. The tasks
(bundled series, recipes, the baselines' scores on a task's test split) are in
:mod:`attnkit.tasks.series`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from attnkit._moved import moved_name
from attnkit.attention.hard import HardAttention
from attnkit.attention.multihead import MultiHeadAttention
from attnkit.attention.soft import SoftAttention

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from attnkit.data.series import Scaler

__all__ = [
    "ATTENTIONS",
    "AttentionForecaster",
    "Forecast",
    "ForecasterConfig",
    "LagAttention",
    "LinearAR",
    "interpret_output",
    "pinball_loss",
    "plot_forecast",
    "residual_quantiles",
    "seasonal_naive",
]

ATTENTIONS = ("soft", "hard", "multihead", "none")
ENCODERS = ("gru", "transformer")


def pinball_loss(pred: Tensor, target: Tensor, quantiles: Sequence[float]) -> Tensor:
    """Mean pinball (quantile) loss (Koenker & Bassett 1978).

    ``L_q(y, p) = max(q (y - p), (q - 1) (y - p))``, averaged over examples, steps and quantiles.

    Args:
        pred: ``(..., Q)`` one prediction per quantile.
        target: ``pred.shape[:-1]``.
        quantiles: ``Q`` levels in (0, 1).
    """
    if pred.shape[:-1] != target.shape or pred.shape[-1] != len(quantiles):
        raise ValueError(
            f"pred must be target's shape {tuple(target.shape)} + ({len(quantiles)},) "
            f"quantiles, got {tuple(pred.shape)}"
        )
    q = torch.as_tensor(quantiles, dtype=pred.dtype, device=pred.device)
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(q * diff, (q - 1) * diff).mean()


@dataclass(frozen=True)
class ForecasterConfig:
    """Size and shape of an :class:`AttentionForecaster`."""

    window: int = 36  # past steps L the model reads
    horizon: int = 12  # future steps Hz it forecasts
    hidden: int = 32  # encoder width D
    attention: str = (
        "soft"  # lag attention: "soft" (additive), "hard" (Gumbel), "multihead", "none"
    )
    score: str = "general"  # score of "soft"/"hard": "general" (Luong), "additive" (Bahdanau), ...
    heads: int = 4  # heads of "multihead" attention and of transformer blocks
    encoder: str = "gru"  # "gru" or "transformer" (causal attnkit.models.blocks.TransformerBlock;
    # with attention="none" its mixer is MeanMixing, so the whole model has no attention)
    layers: int = 1  # encoder layers
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)  # predicted quantile levels, increasing
    dropout: float = 0.0  # dropout on the encoder output and in the head
    attention_dropout: float = 0.0  # dropout on attention weights ("multihead", transformer)
    head_dropout: float = 0.0  # DropHead (Zhou et al. 2020) of "multihead" attention
    normalize: bool = True  # subtract each window's mean and add it back (Kim et al. 2022)

    def __post_init__(self) -> None:
        for name in ("window", "horizon", "hidden", "heads", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        uses_heads = self.attention == "multihead" or self.encoder == "transformer"
        if uses_heads and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        levels = list(self.quantiles)
        if not levels or levels != sorted(set(levels)) or not 0 < levels[0] <= levels[-1] < 1:
            raise ValueError(f"quantiles must increase strictly within (0, 1), got {levels}")
        for name in ("dropout", "attention_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class Forecast:
    """A forecaster's output: ``quantiles (B, Hz, Q)`` and lag attention ``(B, H, Hz, L)``."""

    quantiles: Tensor
    attention: Tensor | None = None

    def median(self, levels: Sequence[float]) -> Tensor:
        """The point forecast ``(B, Hz)``: the level nearest 0.5."""
        return self.quantiles[..., min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))]


class AttentionForecaster(nn.Module):
    """Quantile forecaster whose horizon steps attend over the encoded past window.

    ``forward(past (B, L)) -> Forecast(quantiles (B, Hz, Q), attention (B, H, Hz, L))``, with
    ``H = heads`` for ``"multihead"``, 1 for ``"soft"``/``"hard"`` and no attention for
    ``"none"``.
    """

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden
        self.embed = nn.Linear(1, d)
        self.lag_embedding = nn.Parameter(torch.randn(config.window, d) * 0.02)
        self.horizon_embedding = nn.Parameter(torch.randn(config.horizon, d) * 0.02)
        if config.encoder == "gru":
            self.encoder = nn.GRU(
                d,
                d,
                num_layers=config.layers,
                batch_first=True,
                dropout=config.dropout if config.layers > 1 else 0.0,
            )
        else:
            self.encoder = self._transformer(config)
        self.drop = nn.Dropout(config.dropout)
        self.attention = self._lag_attention(config)
        if self.attention is not None:
            self.query = nn.Linear(d, d)
        head_in = 3 * d if self.attention is not None else 2 * d
        self.head = nn.Sequential(
            nn.Linear(head_in, d),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(d, len(config.quantiles)),
        )

    @staticmethod
    def _transformer(config: ForecasterConfig) -> nn.ModuleList:
        """Causal pre-norm blocks; with ``attention="none"`` their mixer is the causal mean."""
        from attnkit.models.blocks import BlockConfig, MeanMixing, TransformerBlock

        block = BlockConfig(
            config.hidden,
            config.heads,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            head_dropout=config.head_dropout,
            causal=True,
        )
        return nn.ModuleList(
            TransformerBlock(
                block,
                MeanMixing(config.hidden, causal=True) if config.attention == "none" else None,
            )
            for _ in range(config.layers)
        )

    @staticmethod
    def _lag_attention(config: ForecasterConfig) -> nn.Module | None:
        d = config.hidden
        if config.attention == "soft":
            return SoftAttention(d, d, score=config.score)
        if config.attention == "hard":
            return HardAttention(d, d, score=config.score, estimator="gumbel")
        if config.attention == "multihead":
            return MultiHeadAttention(
                d, config.heads, dropout=config.attention_dropout, head_dropout=config.head_dropout
            )
        return None

    def encode(self, past: Tensor) -> tuple[Tensor, Tensor]:
        """Encoded lags ``(B, L, D)`` and the window level ``(B, 1)`` that was subtracted."""
        if past.ndim != 2 or past.shape[1] != self.config.window:
            raise ValueError(
                f"past must be (B, {self.config.window}), got shape {tuple(past.shape)}"
            )
        level = (
            past.mean(1, keepdim=True) if self.config.normalize else past.new_zeros(len(past), 1)
        )
        inputs = self.embed((past - level).unsqueeze(-1)) + self.lag_embedding  # (B, L, D)
        if self.config.encoder == "gru":
            states, _ = self.encoder(inputs)
        else:
            states = inputs
            for block in self.encoder:
                states = block(states).output  # (B, L, D)
        return self.drop(states + inputs), level  # (B, L, D)

    def forward(self, past: Tensor) -> Forecast:
        """Quantile forecast of the next ``horizon`` steps from ``past (B, L)``."""
        memory, level = self.encode(past)
        batch = len(memory)
        last = memory[:, -1:].expand(-1, self.config.horizon, -1)  # (B, Hz, D)
        steps = self.horizon_embedding.expand(batch, -1, -1)  # (B, Hz, D)
        weights = None
        parts = [last, steps]
        if self.attention is not None:
            query = self.query(last) + steps  # (B, Hz, D)
            if isinstance(self.attention, MultiHeadAttention):
                out = self.attention(query, memory, memory, need_weights=True)
                weights = out.weights  # (B, H, Hz, L)
            else:
                out = self.attention(query, memory)
                weights = out.weights.unsqueeze(1)  # (B, 1, Hz, L)
            parts.append(out.output)
        quantiles = self.head(torch.cat(parts, -1)) + level.unsqueeze(-1)  # (B, Hz, Q)
        return Forecast(quantiles, weights)


@dataclass(frozen=True)
class LagAttention:
    """Attention over lags, averaged like pytorch-forecasting's TFT ``interpret_output``.

    Attributes:
        by_position: ``(L,)`` mean weight on each window position (0 = oldest, ``L - 1`` = the
            latest value), over examples, horizon steps and heads; sums to 1.
        by_horizon: ``(Hz, L)`` the same for each horizon step; rows sum to 1.
        by_distance: ``(L + Hz - 1,)`` entry ``d - 1`` is the weight on the value ``d`` steps
            before the forecast target, averaged over horizon steps; sums to 1. Distances near
            both ends are reachable from fewer horizon steps, so they carry less weight.
    """

    by_position: Tensor
    by_horizon: Tensor
    by_distance: Tensor

    @property
    def peak_distance(self) -> int:
        """The distance (in steps before the target) with the most attention."""
        return int(self.by_distance.argmax()) + 1


@torch.no_grad()
def interpret_output(model: AttentionForecaster, past: Tensor) -> LagAttention:
    """Per-lag attention of ``model`` on ``past (B, L)``, averaged over examples, steps, heads."""
    if model.attention is None:
        raise ValueError("interpret_output needs a model with attention, got attention='none'")
    training = model.training
    model.eval()
    try:
        weights = model(past).attention
    finally:
        model.train(training)
    by_horizon = weights.mean((0, 1))  # (Hz, L)
    horizon, window = by_horizon.shape
    by_distance = by_horizon.new_zeros(window + horizon - 1)
    positions = torch.arange(window)
    for h in range(horizon):
        by_distance.index_add_(0, window + h - positions - 1, by_horizon[h])
    return LagAttention(by_horizon.mean(0), by_horizon, by_distance / horizon)


def plot_forecast(
    model: AttentionForecaster,
    past: Tensor,
    future: Tensor | None = None,
    scaler: Scaler | None = None,
    title: str = "",
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """One window's history, forecast with its quantile band, and the attention over lags.

    Args:
        past: ``(L,)`` one scaled window.
        future: ``(Hz,)`` the true continuation, drawn when given.
        scaler: maps values back to the series' units.
        axes: draw into these (values, then attention) instead of a new figure.

    Returns:
        The matplotlib figure: values on top, attention per past step (mean over horizon steps and
        heads) as bars on a second axis below; no attention axis for ``attention="none"``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = model.config
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = model(past.unsqueeze(0))
    finally:
        model.train(training)
    unscale = scaler.inverse if scaler is not None else (lambda x: x)
    quantiles = unscale(result.quantiles[0]).numpy()  # (Hz, Q)
    past_t = range(-config.window + 1, 1)
    future_t = range(1, config.horizon + 1)
    if axes is None:
        rows = 2 if result.attention is not None else 1
        fig, grid = plt.subplots(
            rows,
            1,
            figsize=(9, 5 if rows == 2 else 3.5),
            sharex=True,
            squeeze=False,
            gridspec_kw={"height_ratios": [3, 1][:rows]},
        )
        axes = list(grid[:, 0])
    ax = axes[0]
    ax.plot(past_t, unscale(past).numpy(), color="black", lw=1, label="history")
    if future is not None:
        ax.plot(future_t, unscale(future).numpy(), color="black", ls="--", lw=1, label="actual")
    mid = min(range(len(config.quantiles)), key=lambda i: abs(config.quantiles[i] - 0.5))
    ax.plot(future_t, quantiles[:, mid], color="C0", label=f"forecast q{config.quantiles[mid]}")
    ax.fill_between(
        future_t,
        quantiles[:, 0],
        quantiles[:, -1],
        color="C0",
        alpha=0.25,
        label=f"q{config.quantiles[0]}-q{config.quantiles[-1]}",
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or f"{config.attention} attention forecaster")
    if result.attention is not None and len(axes) > 1:
        weights = result.attention[0].mean((0, 1)).numpy()  # (L,)
        axes[1].bar(past_t, weights, color="C1", width=1.0)
        axes[1].set_ylabel("attention")
        axes[1].set_xlabel("steps (0 = last observed)")
        axes[1].set_xlim(ax.get_xlim())  # bars line up with the history above
    fig = ax.figure
    fig.tight_layout()
    return fig


def seasonal_naive(past: Tensor, horizon: int, period: int) -> Tensor:
    """Seasonal-naive forecast: each step repeats the value one season earlier.

    ``y[t + h] = y[t + h - period * ceil(h / period)]`` for ``h = 1..horizon``.

    Args:
        past: ``(N, L)`` with ``L >= period``.

    Returns:
        ``(N, horizon)``.
    """
    window = past.shape[-1]
    if not 1 <= period <= window:
        raise ValueError(f"period must be in [1, window={window}], got {period}")
    index = window - period + torch.arange(horizon) % period
    return past[..., index]


@dataclass(frozen=True)
class LinearAR:
    """Linear autoregression ``future = past @ weight + bias``, one column per horizon step.

    ``weight (L, Hz)``, ``bias (Hz,)``; :meth:`fit` solves the least-squares problem directly.
    """

    weight: Tensor
    bias: Tensor

    @classmethod
    def fit(cls, past: Tensor, future: Tensor) -> LinearAR:
        """Least squares on training windows ``past (N, L)``, ``future (N, Hz)`` (float64)."""
        design = torch.cat([past.double(), past.new_ones(len(past), 1).double()], 1)
        solution = torch.linalg.lstsq(design, future.double(), driver="gelsd").solution
        return cls(solution[:-1], solution[-1])

    def predict(self, past: Tensor) -> Tensor:
        """``(N, L) -> (N, Hz)`` in ``past``'s dtype."""
        return (past.double() @ self.weight + self.bias).to(past.dtype)


def residual_quantiles(point: Tensor, residuals: Tensor, quantiles: Sequence[float]) -> Tensor:
    """Quantile forecasts from a point forecast and held-in residuals.

    Args:
        point: ``(N, Hz)`` point forecasts.
        residuals: ``(M, Hz)`` ``target - point`` on fitting windows.
        quantiles: ``Q`` levels.

    Returns:
        ``(N, Hz, Q)``: ``point`` plus the empirical ``q``-quantile of each step's residuals.
    """
    levels = torch.as_tensor(quantiles, dtype=residuals.dtype)
    offsets = torch.quantile(residuals, levels, dim=0).T  # (Hz, Q)
    return point.unsqueeze(-1) + offsets.to(point.dtype)


def __getattr__(name: str):
    return moved_name(__name__, name)  # the tasks moved to attnkit.tasks.series
