"""``capture()``: record attention weights and statistics from a model without editing it.

Supported layers, found by walking ``model.named_modules()``:

- attnkit's :class:`~attnkit.attention.multihead.MultiHeadAttention` (through a backend registered
  for the duration of the block);
- ``torch.nn.MultiheadAttention``, inside ``nn.TransformerEncoder`` too (its fused fast path is
  switched off for the block);
- Hugging Face transformers attention modules that dispatch through ``AttentionInterface``
  (BERT, GPT-2, Llama, Qwen2, ... with ``sdpa`` or ``eager``): the interface entry of the model's
  implementation is wrapped for the block.

Everything is restored when the block exits, even on an exception. Several blocks may be nested
or repeated on one model; each gets what it asked for.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention import backends
from attnkit.attention.multihead import MultiHeadAttention
from attnkit.capture.stats import attention_stats, check_stats, stats_from_weights

__all__ = ["Recording", "attention_layers", "capture"]


@dataclass
class Recording:
    """What a :func:`capture` block recorded.

    Calls of a layer within one block are joined along the query axis (a ``generate()`` with a
    KV cache gives the same result as one forward over the final sequence; weights of earlier
    steps are padded with zeros for the keys that did not exist yet).

    Attributes:
        layers: names of the attention layers recorded, in ``named_modules()`` order.
        weights: ``{layer: (B, H, Q, K)}`` when ``weights=True``.
        grads: ``{layer: (B, H, Q, K)}``, the gradient of what ``backward()`` was called on with
            respect to each layer's weights, when ``grad=True``.
        stats: ``{statistic: {layer: (B, H, Q)}}`` for the statistics asked for.
    """

    layers: list[str]
    want_weights: bool
    want_stats: tuple[str, ...]
    spans: dict[str, tuple[int, int]]
    heads: list[int] | None
    want_grad: bool = False
    _weights: dict[str, list[Tensor]] = field(default_factory=dict, repr=False)
    _stats: dict[str, dict[str, list[Tensor]]] = field(default_factory=dict, repr=False)

    @property
    def weights(self) -> dict[str, Tensor]:
        return {layer: self._join(chunks) for layer, chunks in self._weights.items()}

    @property
    def grads(self) -> dict[str, Tensor]:
        if not self.want_grad:
            raise ValueError("gradients were not recorded: use capture(..., grad=True)")
        grads = {}
        for layer, chunks in self._weights.items():
            if any(chunk.grad is None for chunk in chunks):
                raise RuntimeError(
                    f"no gradient for layer {layer!r} yet: call backward() on an output computed "
                    "inside the capture block, with autograd enabled"
                )
            grads[layer] = self._join([chunk.grad for chunk in chunks])
        return grads

    def _join(self, chunks: list[Tensor]) -> Tensor:
        """Calls joined along the queries, earlier ones padded with zeros for later keys."""
        keys = max(chunk.shape[-1] for chunk in chunks)
        joined = torch.cat([F.pad(chunk, (0, keys - chunk.shape[-1])) for chunk in chunks], -2)
        return (joined if self.heads is None else joined[:, self.heads]).detach()

    @property
    def stats(self) -> dict[str, dict[str, Tensor]]:
        return {
            name: {layer: torch.cat(chunks, dim=-1) for layer, chunks in by_layer.items()}
            for name, by_layer in self._stats.items()
        }

    def _record(self, layer: str, weights: Tensor | None, stats: Mapping[str, Tensor]) -> None:
        select = (lambda t: t) if self.heads is None else (lambda t: t[:, self.heads])
        if self.want_weights and weights is not None:
            if self.want_grad and weights.requires_grad:
                weights.retain_grad()
            else:
                weights = weights.detach()
            self._weights.setdefault(layer, []).append(weights)
        for name in self.want_stats:
            chunk = select(stats[name].detach())
            self._stats.setdefault(name, {}).setdefault(layer, []).append(chunk)


# ----------------------------------------------------------------------------- dispatch

# id(module) -> [(recording, layer name)] of the capture blocks open on that module
_ACTIVE: dict[int, list[tuple[Recording, str]]] = {}


def _attend(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: bool,
    scale: float | None,
    dropout_p: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """Attention for one call of a captured layer, recorded for every open block.

    Shapes as in :mod:`attnkit.attention.backends`. Weights are materialized only when a block
    (or the caller) asks for them; statistics otherwise come from the streamed kernel.
    """
    listeners = _ACTIVE.get(id(module), [])
    weights_wanted = need_weights or dropout_p > 0 or any(r.want_weights for r, _ in listeners)
    names = tuple(dict.fromkeys(n for r, _ in listeners for n in r.want_stats))
    spans = {k: v for r, _ in listeners for k, v in r.spans.items()}
    kwargs = {"mask": mask, "bias": bias, "causal": causal, "scale": scale}
    if weights_wanted:
        result = backends.math_attention(
            query, key, value, dropout_p=dropout_p, need_weights=True, **kwargs
        )
        stats = stats_from_weights(result.weights, names, spans) if names else {}
    elif names:
        result = attention_stats(query, key, value, stats=names, spans=spans, **kwargs)
        stats = result.stats
    else:
        result = backends.get("sdpa").fn(query, key, value, **kwargs)
        stats = {}
    for recording, layer in listeners:
        recording._record(layer, result.weights, stats)
    return result.output, result.weights


# ----------------------------------------------------------------------------- adapters


def _is_hf_attention(module: nn.Module) -> bool:
    return _forward_uses_interface(type(module))


@functools.cache
def _forward_uses_interface(cls: type) -> bool:
    try:
        return "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False


def attention_layers(model: nn.Module) -> list[str]:
    """Names of the attention layers :func:`capture` can record in ``model``."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, MultiHeadAttention | nn.MultiheadAttention)
        or _is_hf_attention(module)
    ]


_counter = itertools.count()


@contextmanager
def _attnkit_adapter(module: MultiHeadAttention) -> Iterator[None]:
    original = module.backend
    name = f"attnkit.capture.{next(_counter)}"

    def recorded(
        query,
        key,
        value,
        *,
        mask=None,
        bias=None,
        causal=False,
        scale=None,
        dropout_p=0.0,
        need_weights=False,
    ):
        output, weights = _attend(
            module,
            query,
            key,
            value,
            mask=mask,
            bias=bias,
            causal=causal,
            scale=scale,
            dropout_p=dropout_p,
            need_weights=need_weights,
        )
        return backends.AttentionOutput(output, weights if need_weights else None)

    backends.register(name, recorded, weights=True)
    module.backend = name
    try:
        yield
    finally:
        module.backend = original
        backends.unregister(name)


def _torch_masks(
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    batch: int,
    heads: int,
    dtype: torch.dtype,
) -> tuple[Tensor | None, Tensor | None]:
    """nn.MultiheadAttention's masks (True / -inf = blocked) as attnkit's (mask, bias)."""
    mask, bias = None, None
    parts = []
    if key_padding_mask is not None:
        parts.append(key_padding_mask.view(batch, 1, 1, -1))
    if attn_mask is not None:
        shape = (
            (1, 1, *attn_mask.shape)
            if attn_mask.dim() == 2
            else (batch, heads, *attn_mask.shape[1:])
        )
        parts.append(attn_mask.view(shape))
    for part in parts:
        if part.dtype == torch.bool:
            mask = ~part if mask is None else mask & ~part
        else:
            bias = part.to(dtype) if bias is None else bias + part.to(dtype)
    return mask, bias


@contextmanager
def _torch_adapter(module: nn.MultiheadAttention) -> Iterator[None]:
    if module.bias_k is not None or module.add_zero_attn:
        raise ValueError(
            "capture() does not support nn.MultiheadAttention with add_bias_kv or add_zero_attn"
        )

    def forward(
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (x.unsqueeze(1) for x in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not module.batch_first or unbatched:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))  # (B, L, E)
        batch, length, embed = query.shape
        heads, head_dim = module.num_heads, module.head_dim
        if module._qkv_same_embed_dim:
            weights = module.in_proj_weight.chunk(3)
        else:
            weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
        biases = (None,) * 3 if module.in_proj_bias is None else module.in_proj_bias.chunk(3)
        q, k, v = (
            F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases, strict=True)
        )
        q = q.view(batch, length, heads, head_dim).transpose(1, 2)  # (B, H, L, D)
        k = k.view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, H, S, D)
        v = v.view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, H, S, D)
        mask, bias = _torch_masks(key_padding_mask, attn_mask, batch, heads, q.dtype)
        out, attn = _attend(
            module,
            q,
            k,
            v,
            mask=mask,
            bias=bias,
            causal=False,
            scale=None,
            dropout_p=module.dropout if module.training else 0.0,
            need_weights=need_weights,
        )
        out = out.transpose(1, 2).reshape(batch, length, embed)
        out = F.linear(out, module.out_proj.weight, module.out_proj.bias)
        if not module.batch_first or unbatched:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        attn = attn.mean(dim=1) if average_attn_weights else attn
        return out, attn.squeeze(0) if unbatched else attn

    had_own = "forward" in module.__dict__
    original = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if had_own:
            module.forward = original
        else:
            del module.forward


def _hf_mask(
    attention_mask: Tensor | None, dtype: torch.dtype
) -> tuple[Tensor | None, Tensor | None]:
    """A Hugging Face attention mask (bool: True = attend; float: additive) as (mask, bias)."""
    if attention_mask is None:
        return None, None
    if attention_mask.dtype == torch.bool:
        return attention_mask, None
    return None, attention_mask.to(dtype)


# keyword arguments of Hugging Face attention functions that change the weights in ways the
# recorder does not reproduce (logit soft-capping, learned sink logits)
_UNSUPPORTED_HF = ("softcap", "s_aux")


@contextmanager
def _hf_adapter(implementation: str) -> Iterator[None]:
    """Wrap the ``AttentionInterface`` entry of one implementation name for every model."""
    from transformers.modeling_utils import AttentionInterface

    mapping = AttentionInterface._global_mapping
    had = implementation in mapping
    original = mapping.get(implementation)

    def recorded(
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=0.0,
        scaling=None,
        is_causal=None,
        **kwargs,
    ):
        if id(module) not in _ACTIVE and original is not None:
            return original(
                module,
                query,
                key,
                value,
                attention_mask,
                dropout=dropout,
                scaling=scaling,
                is_causal=is_causal,
                **kwargs,
            )
        unsupported = [name for name in _UNSUPPORTED_HF if kwargs.get(name) is not None]
        if unsupported:
            raise ValueError(
                f"capture() cannot record attention that uses {unsupported} "
                f"({type(module).__name__}); leave this layer out with layers=[...]"
            )
        mask, bias = _hf_mask(attention_mask, query.dtype)
        position_bias = kwargs.get("position_bias")
        if position_bias is not None:
            position_bias = position_bias.to(query.dtype)
            bias = position_bias if bias is None else bias + position_bias
        if is_causal is None:
            is_causal = getattr(module, "is_causal", False)
        causal = bool(is_causal) and attention_mask is None and query.shape[-2] > 1
        output, weights = _attend(
            module,
            query,
            key,
            value,
            mask=mask,
            bias=bias,
            causal=causal,
            scale=scaling,
            dropout_p=dropout,
            need_weights=implementation == "eager",
        )
        return output.transpose(1, 2).contiguous(), weights

    mapping[implementation] = recorded
    try:
        yield
    finally:
        if had:
            mapping[implementation] = original
        else:
            del mapping[implementation]


_hf_depth: dict[str, int] = {}


@contextmanager
def _shared(
    counter: dict, key: object, make: Callable[[], AbstractContextManager[None]]
) -> Iterator[None]:
    """Enter ``make()`` for the first holder of ``key`` only; exit it with the last one."""
    counter[key] = counter.get(key, 0) + 1
    try:
        if counter[key] == 1:
            with make():
                yield
        else:
            yield
    finally:
        counter[key] -= 1
        if not counter[key]:
            del counter[key]


_module_depth: dict[int, int] = {}


@contextmanager
def _fastpath_off() -> Iterator[None]:
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


@contextmanager
def capture(
    model: nn.Module,
    weights: bool = False,
    stats: Iterable[str] = (),
    spans: Mapping[str, tuple[int, int]] | None = None,
    layers: Sequence[str] | None = None,
    heads: Sequence[int] | None = None,
    grad: bool = False,
) -> Iterator[Recording]:
    """Record attention from ``model`` while the block runs.

    Args:
        model: any module containing supported attention layers (see the module docstring).
        weights: record the exact per-head weights ``(B, H, Q, K)`` (materialized: ``O(N²)``).
        stats: per-query statistics computed without the ``N × N`` matrix: ``"entropy"``,
            ``"max"``, ``"argmax"``, ``"sink"``, ``"mass:<span>"``.
        spans: ``{name: (start, stop)}`` key positions; each adds ``"mass:<name>"``.
        layers: names (from ``model.named_modules()``) of the layers to record; default all.
        heads: head indices to keep; default all.
        grad: also keep the weights in the autograd graph, so that after ``backward()``
            ``rec.grads`` holds the gradient with respect to them (implies ``weights=True``).

    Yields:
        A :class:`Recording`, filled as the model runs.

    Example::

        with attnkit.capture(model, stats=("entropy",), spans={"context": (0, 120)}) as rec:
            model(**inputs)
        rec.stats["mass:context"]["model.layers.0.self_attn"]   # (B, H, Q)
    """
    names, spans = check_stats(stats, spans)
    found = attention_layers(model)
    if not found:
        raise ValueError(
            f"no supported attention layer in {type(model).__name__}: capture() records attnkit "
            "MultiHeadAttention, nn.MultiheadAttention and Hugging Face attention modules"
        )
    chosen = found if layers is None else list(layers)
    unknown = [name for name in chosen if name not in found]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; attention layers of this model: {found}")
    if heads is not None and not all(isinstance(h, int) and h >= 0 for h in heads):
        raise ValueError(f"heads must be non-negative head indices, got {heads!r}")
    recording = Recording(
        chosen, weights or grad, names, spans, None if heads is None else list(heads), grad
    )
    modules = dict(model.named_modules())

    with ExitStack() as stack:
        for name in chosen:
            module = modules[name]
            listeners = _ACTIVE.setdefault(id(module), [])
            listeners.append((recording, name))
            stack.callback(_forget, module, recording)
            if isinstance(module, MultiHeadAttention):
                stack.enter_context(
                    _shared(_module_depth, id(module), functools.partial(_attnkit_adapter, module))
                )
            elif isinstance(module, nn.MultiheadAttention):
                stack.enter_context(
                    _shared(_module_depth, id(module), functools.partial(_torch_adapter, module))
                )
                stack.enter_context(_shared(_module_depth, "fastpath", _fastpath_off))
            else:
                implementation = module.config._attn_implementation
                stack.enter_context(
                    _shared(
                        _hf_depth, implementation, functools.partial(_hf_adapter, implementation)
                    )
                )
        yield recording


def _forget(module: nn.Module, recording: Recording) -> None:
    listeners = _ACTIVE.get(id(module), [])
    listeners[:] = [(r, n) for r, n in listeners if r is not recording]
    if not listeners:
        _ACTIVE.pop(id(module), None)
