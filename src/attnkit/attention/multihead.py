"""Multi-head attention (Vaswani et al. 2017) with grouped-query heads, positions and a KV cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention import backends
from attnkit.attention.cache import KVCache
from attnkit.attention.functional import drop_heads, prepare_mask, window_mask
from attnkit.attention.output import AttentionOutput
from attnkit.attention.positional import ALiBi, PositionScheme, RotaryEmbedding

__all__ = ["MultiHeadAttention"]


def _position_scheme(
    positions: str | PositionScheme | None, num_heads: int, head_dim: int
) -> PositionScheme | None:
    if positions is None or isinstance(positions, PositionScheme):
        return positions
    if positions == "rope":
        return RotaryEmbedding(head_dim)
    if positions == "alibi":
        return ALiBi(num_heads)
    raise ValueError(
        f"positions must be None, 'rope', 'alibi' or a PositionScheme, got {positions!r}"
    )


class MultiHeadAttention(nn.Module):
    """Multi-head attention: self- or cross-, causal or not, with GQA/MQA and a KV cache.

    ``H`` query heads of size ``D = embed_dim / H`` share ``Hkv`` key/value heads
    (grouped-query attention, Ainslie et al. 2023; ``Hkv = 1`` is multi-query attention,
    Shazeer 2019). Inputs are batch-first. The attention itself runs on a registered backend
    (:mod:`attnkit.attention.backends`): ``"auto"`` uses the fused SDPA kernel and switches to
    the ``"math"`` reference only when ``need_weights=True``.

    Args:
        embed_dim: model size ``E`` of the queries and of the output.
        num_heads: query heads ``H``; must divide ``embed_dim``.
        num_kv_heads: key/value heads ``Hkv``; must divide ``num_heads``. ``None`` means ``H``.
        causal: each query attends only to keys at or before its position (bottom-right
            aligned: with a cache, the new queries are the last positions).
        dropout: attention-weight dropout probability, applied in training mode only.
        head_dropout: DropHead probability (Zhou et al. 2020): in training mode, each head's
            output is dropped whole for an example and the kept heads are rescaled
            (:func:`attnkit.attention.functional.drop_heads`). Returned weights are unaffected.
        bias: learn biases in the input and output projections.
        kdim, vdim: feature sizes of ``key`` and ``value`` for cross-attention; default ``E``.
        window: sliding-window (local) attention: a query attends to keys at distance
            ``< window`` (with ``causal``, its last ``window`` positions including itself).
        positions: ``"rope"`` (:class:`RotaryEmbedding`), ``"alibi"`` (:class:`ALiBi`), a
            :class:`PositionScheme` instance, or ``None``. Self-attention only.
        backend: a name from :func:`attnkit.attention.backends.available`.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        causal: bool = False,
        dropout: float = 0.0,
        *,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        window: int | None = None,
        positions: str | PositionScheme | None = None,
        backend: str = "auto",
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"embed_dim and num_heads must be positive, got {embed_dim} and {num_heads}"
            )
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(
                f"num_kv_heads must be a positive divisor of num_heads ({num_heads}), "
                f"got {num_kv_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0.0 <= head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout}")
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be a positive integer or None, got {window!r}")
        if backend != "auto":
            backends.get(backend)

        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.causal = causal
        self.dropout = dropout
        self.head_dropout = head_dropout
        self.window = window
        self.backend = backend
        self.positions = _position_scheme(positions, num_heads, self.head_dim)

        kv_dim = num_kv_heads * self.head_dim
        self._sizes = [embed_dim, kv_dim, kv_dim]  # rows of the q, k, v projections
        if self.kdim == embed_dim and self.vdim == embed_dim:
            # One fused (E + 2·Hkv·D, E) matrix: self-attention projects with a single matmul.
            self.in_proj_weight = nn.Parameter(torch.empty(sum(self._sizes), embed_dim))
            self.q_proj_weight = self.k_proj_weight = self.v_proj_weight = None
        else:
            self.in_proj_weight = None
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
            self.k_proj_weight = nn.Parameter(torch.empty(kv_dim, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(kv_dim, self.vdim))
        self.in_proj_bias = nn.Parameter(torch.zeros(sum(self._sizes))) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform input projections and zero biases, as in ``nn.MultiheadAttention``."""
        projections = (
            self.in_proj_weight,
            self.q_proj_weight,
            self.k_proj_weight,
            self.v_proj_weight,
        )
        for weight in projections:
            if weight is not None:
                nn.init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def extra_repr(self) -> str:
        parts = [f"embed_dim={self.embed_dim}", f"num_heads={self.num_heads}"]
        if self.num_kv_heads != self.num_heads:
            parts.append(f"num_kv_heads={self.num_kv_heads}")
        for name in ("causal", "dropout", "head_dropout", "window"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        return ", ".join([*parts, f"backend={self.backend!r}"])

    def _project(
        self, query: Tensor, key: Tensor, value: Tensor, self_attention: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        biases = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.split(self._sizes)
        if self.in_proj_weight is None:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        elif self_attention:
            return F.linear(query, self.in_proj_weight, self.in_proj_bias).split(self._sizes, -1)
        else:
            weights = self.in_proj_weight.split(self._sizes)
        return tuple(
            F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases, strict=True)
        )

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        for name, x, dim in (("query", query, self.embed_dim), ("key", key, self.kdim)):
            if x.ndim != 3 or x.shape[-1] != dim:
                raise ValueError(f"{name} must be (B, T, {dim}), got shape {tuple(x.shape)}")
        if value.ndim != 3 or value.shape[-1] != self.vdim or value.shape[:2] != key.shape[:2]:
            raise ValueError(
                f"value must be (B, K, {self.vdim}) with key's (B, K) = {tuple(key.shape[:2])}, "
                f"got shape {tuple(value.shape)}"
            )
        if key.shape[0] != query.shape[0]:
            raise ValueError(
                f"query and key must have the same batch size, got {query.shape[0]} "
                f"and {key.shape[0]}"
            )
        if not query.is_floating_point() or key.dtype != query.dtype or value.dtype != query.dtype:
            raise TypeError(
                "query, key and value must share one floating dtype, got "
                f"{query.dtype}, {key.dtype} and {value.dtype}"
            )

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        mask: Tensor | None = None,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> AttentionOutput:
        """Attend from ``query`` to ``key``/``value`` (self-attention when they are omitted).

        Args:
            query: ``(B, Q, E)``.
            key: ``(B, K, kdim)``; defaults to ``query``.
            value: ``(B, K, vdim)``; defaults to ``key``.
            mask: boolean, ``True`` = may attend: ``(B, K)`` key padding, ``(B, Q, K)``, or
                anything broadcastable to ``(B, H, Q, K)`` (``K`` counts cached positions too).
            need_weights: also return the per-head weights (runs the ``"math"`` backend under
                ``backend="auto"``).
            cache: a :class:`KVCache` for step-by-step self-attention decoding; the new keys and
                values are appended to it and the queries sit after the cached positions.

        Returns:
            ``AttentionOutput(output (B, Q, E), weights (B, H, Q, K) or None)``.
        """
        self_attention = key is None and value is None
        key = query if key is None else key
        value = key if value is None else value
        self._check_inputs(query, key, value)
        if cache is not None and not self_attention:
            raise ValueError("cache is for self-attention decoding; do not pass key or value")
        if self.positions is not None and key is not query:
            raise ValueError("positions (RoPE, ALiBi) apply to self-attention only")

        batch, num_queries, _ = query.shape
        q, k, v = self._project(query, key, value, self_attention)
        q = q.view(batch, num_queries, self.num_heads, self.head_dim).transpose(
            1, 2
        )  # (B, H, Q, D)
        k = k.view(batch, -1, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, K, D)
        v = v.view(batch, -1, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, K, D)

        offset = 0 if cache is None else len(cache)
        if self.positions is not None:
            q, k = self.positions.rotate(q, k, offset)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, Hkv, offset + Q, D)
        num_keys = k.shape[-2]

        mask = prepare_mask(mask, (batch, self.num_heads, num_queries, num_keys))
        if self.window is not None:
            local = window_mask(num_queries, num_keys, self.window, device=q.device)
            mask = local if mask is None else mask & local
        bias = None
        if self.positions is not None:
            bias = self.positions.bias(num_queries, num_keys, q.device)
            bias = None if bias is None else bias.to(q.dtype)

        result = backends.resolve(self.backend, need_weights).fn(
            q,
            k,
            v,
            mask=mask,
            bias=bias,
            causal=self.causal,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
        )
        heads = result.output  # (B, H, Q, D)
        if self.training and self.head_dropout:
            heads = drop_heads(heads, self.head_dropout)
        merged = heads.transpose(1, 2).reshape(batch, num_queries, self.embed_dim)
        return AttentionOutput(self.out_proj(merged), result.weights)  # (B, Q, E)

    @classmethod
    def from_torch(
        cls, module: nn.MultiheadAttention, *, causal: bool = False, backend: str = "auto"
    ) -> MultiHeadAttention:
        """A copy of ``nn.MultiheadAttention``'s weights (call it with batch-first inputs).

        ``add_bias_kv`` and ``add_zero_attn`` have no equivalent here and raise ``ValueError``.
        The new module is on the device and in the dtype of ``module``.
        """
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"module must be nn.MultiheadAttention, got {type(module).__name__}")
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn are not supported by from_torch")
        reference = module.out_proj.weight
        new = cls(
            module.embed_dim,
            module.num_heads,
            causal=causal,
            dropout=module.dropout,
            bias=module.in_proj_bias is not None,
            kdim=module.kdim,
            vdim=module.vdim,
            backend=backend,
        ).to(device=reference.device, dtype=reference.dtype)
        with torch.no_grad():
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                source = getattr(module, name)
                if source is not None:
                    getattr(new, name).copy_(source)
            new.out_proj.weight.copy_(module.out_proj.weight)
            if module.in_proj_bias is not None:
                new.in_proj_bias.copy_(module.in_proj_bias)
                new.out_proj.bias.copy_(module.out_proj.bias)
        new.train(module.training)
        return new
