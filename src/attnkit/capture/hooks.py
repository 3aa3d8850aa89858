"""Hooks into every supported kind of attention layer, shared by capture and interventions.

Supported layers, found by walking ``model.named_modules()``:

- attnkit's :class:`~attnkit.attention.multihead.MultiHeadAttention` (through a backend registered
  while hooked);
- ``torch.nn.MultiheadAttention``, inside ``nn.TransformerEncoder`` too (its fused fast path is
  switched off while hooked);
- Hugging Face transformers attention modules that dispatch through ``AttentionInterface``
  (BERT, GPT-2, Llama, Qwen2, ... with ``sdpa`` or ``eager``): the interface entry of the model's
  implementation is wrapped while hooked.

A hook is installed by the first block that needs it and removed by the last one, so blocks nest.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention import backends
from attnkit.attention.multihead import MultiHeadAttention
from attnkit.attention.output import AttentionOutput
from attnkit.capture.stats import Span, attention_stats, stats_from_weights

__all__ = ["attention_layers", "check_layers", "hooked"]


# ----------------------------------------------------------------------------- dispatch


class Listener(Protocol):
    """What a hook needs from whoever listens to a layer (a :class:`Recording`, say)."""

    want_weights: bool
    want_stats: tuple[str, ...]
    spans: dict[str, Span]
    last_query: bool  # only each call's last query is recorded

    def _record(self, layer: str, weights: Tensor | None, stats: Mapping[str, Tensor]) -> None: ...


Edit = Callable[[str, Tensor], Tensor]

# id(module) -> [(listener, layer name)] of the blocks open on that module
_ACTIVE: dict[int, list[tuple[Listener, str]]] = {}
# id(module) -> [(edit, layer name)]: interventions that replace the module's weights
_EDITS: dict[int, list[tuple[Edit, str]]] = {}


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
    """Attention for one call of a hooked layer: edited if asked, recorded for every listener.

    Shapes as in :mod:`attnkit.attention.backends`. Weights are materialized only when a block
    (or the caller) asks for them; statistics otherwise come from the streamed kernel.
    """
    listeners = _ACTIVE.get(id(module), [])
    edits = _EDITS.get(id(module), [])
    weights_wanted = (
        need_weights or dropout_p > 0 or edits or any(r.want_weights for r, _ in listeners)
    )
    names = tuple(dict.fromkeys(n for r, _ in listeners for n in r.want_stats))
    spans = {k: v for r, _ in listeners for k, v in r.spans.items()}
    kwargs = {"mask": mask, "bias": bias, "causal": causal, "scale": scale}
    recording = [r for r, _ in listeners if r.want_stats or r.want_weights]
    last_only = recording and all(r.last_query for r in recording)
    weights = None
    if edits:
        weights = backends.math_attention(query, key, value, need_weights=True, **kwargs).weights
        for edit, layer in edits:
            weights = edit(layer, weights)
        attended = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
        result = AttentionOutput(backends.weighted_values(attended, value), weights)
        stats = stats_from_weights(weights, names, spans) if names else {}
    elif last_only and not (need_weights or dropout_p > 0):
        # only the last query is recorded (generation): statistics (and weights, when asked
        # for) for one query row; a decoding step's row is its whole output, a longer call's
        # output comes from the fused kernel
        row = query[..., -1:, :]
        last = {"mask": _last_row(mask), "bias": _last_row(bias), "causal": causal, "scale": scale}
        computed = attention_stats(row, key, value, stats=names, spans=spans, **last)
        stats = computed.stats
        if query.shape[-2] == 1:
            result = computed
        else:
            result = backends.get("sdpa").fn(query, key, value, **kwargs)
        if weights_wanted:
            weights = backends.math_attention(row, key, value, need_weights=True, **last).weights
    elif weights_wanted:
        result = backends.math_attention(
            query, key, value, dropout_p=dropout_p, need_weights=True, **kwargs
        )
        weights = result.weights
        stats = stats_from_weights(result.weights, names, spans) if names else {}
    elif names:
        result = attention_stats(query, key, value, stats=names, spans=spans, **kwargs)
        stats = result.stats
    else:
        result = backends.get("sdpa").fn(query, key, value, **kwargs)
        stats = {}
    for listener, layer in listeners:
        listener._record(layer, weights, stats)
    return result.output, result.weights


def _last_row(x: Tensor | None) -> Tensor | None:
    """The last query's row of a mask or bias that may be broadcast along the queries."""
    return x if x is None or x.shape[-2] == 1 else x[..., -1:, :]


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
        if id(module) not in _ACTIVE and id(module) not in _EDITS and original is not None:
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


# how many open blocks hold each hook: ("module", id), ("implementation", name), ("fastpath",)
_holders: dict[tuple, int] = {}


@contextmanager
def _shared(key: tuple, make: Callable[[], AbstractContextManager[None]]) -> Iterator[None]:
    """Enter ``make()`` for the first holder of ``key`` only; exit it with the last one."""
    _holders[key] = _holders.get(key, 0) + 1
    try:
        if _holders[key] == 1:
            with make():
                yield
        else:
            yield
    finally:
        _holders[key] -= 1
        if not _holders[key]:
            del _holders[key]


@contextmanager
def _fastpath_off() -> Iterator[None]:
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def check_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """The layer names to hook: all attention layers, or ``layers`` after checking them."""
    found = attention_layers(model)
    if not found:
        raise ValueError(
            f"no supported attention layer in {type(model).__name__}: attnkit hooks attnkit "
            "MultiHeadAttention, nn.MultiheadAttention and Hugging Face attention modules"
        )
    chosen = found if layers is None else list(layers)
    unknown = [name for name in chosen if name not in found]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; attention layers of this model: {found}")
    return chosen


@contextmanager
def hooked(
    model: nn.Module,
    layers: Sequence[str],
    listener: Listener | None = None,
    edit: Edit | None = None,
) -> Iterator[None]:
    """Hook ``layers`` of ``model`` for the block: record into ``listener``, apply ``edit``."""
    modules = dict(model.named_modules())
    with ExitStack() as stack:
        for name in layers:
            module = modules[name]
            for registry, entry in ((_ACTIVE, listener), (_EDITS, edit)):
                if entry is not None:
                    registry.setdefault(id(module), []).append((entry, name))
                    stack.callback(_forget, registry, module, entry)
            if isinstance(module, MultiHeadAttention):
                adapter = functools.partial(_attnkit_adapter, module)
                stack.enter_context(_shared(("module", id(module)), adapter))
            elif isinstance(module, nn.MultiheadAttention):
                adapter = functools.partial(_torch_adapter, module)
                stack.enter_context(_shared(("module", id(module)), adapter))
                stack.enter_context(_shared(("fastpath",), _fastpath_off))
            else:
                implementation = module.config._attn_implementation
                adapter = functools.partial(_hf_adapter, implementation)
                stack.enter_context(_shared(("implementation", implementation), adapter))
        yield


def _forget(registry: dict, module: nn.Module, entry: object) -> None:
    entries = registry.get(id(module), [])
    entries[:] = [(e, n) for e, n in entries if e is not entry]
    if not entries:
        registry.pop(id(module), None)
