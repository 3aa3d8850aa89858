"""Hooks into every supported kind of attention layer, shared by capture and interventions.

Supported layers, found by walking ``model.named_modules()``:

- attnkit's :class:`~attnkit.attention.multihead.MultiHeadAttention` (through a backend registered
  while hooked);
- ``torch.nn.MultiheadAttention``, inside ``nn.TransformerEncoder`` too (its fused fast path is
  switched off while hooked);
- Hugging Face transformers attention modules that dispatch through ``AttentionInterface``
  (BERT, T5, GPT-2, Llama, Gemma, ... with ``sdpa`` or ``eager``): each captured layer gets a
  config of its own naming attnkit's dispatcher for the block (:mod:`attnkit.recording.hf`); no
  other layer or model is touched.

A hook is installed by the first block that needs it and removed by the last one, so blocks nest;
blocks open and close under one lock, from any thread.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention import backends
from attnkit.attention.multihead import MultiHeadAttention
from attnkit.recording import hf
from attnkit.recording.dispatch import ACTIVE, EDITS, LOCK, Edit, Listener, attend

__all__ = ["attention_layers", "check_layers", "hooked"]


# ----------------------------------------------------------------------------- adapters


def attention_layers(model: nn.Module) -> list[str]:
    """Names of the attention layers :func:`capture` can record in ``model``."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, MultiHeadAttention | nn.MultiheadAttention)
        or hf.is_hf_attention(module)
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
        output, weights = attend(
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
        out, attn = attend(
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
    """Hook ``layers`` of ``model`` for the block: record into ``listener``, apply ``edit``.

    Raises ``ValueError`` before anything is hooked for a layer capture cannot read exactly.
    """
    modules = dict(model.named_modules())
    chosen = [(name, modules[name]) for name in layers]
    hf_layers = [m for name, m in chosen if hf.is_hf_attention(m)]
    for name, module in chosen:
        if hf.is_hf_attention(module):
            hf.check_supported(model, name, module)
    stack = ExitStack()
    with LOCK:
        try:
            _install(stack, chosen, hf_layers, listener, edit)
        except BaseException:
            stack.close()
            raise
    try:
        yield
    finally:
        with LOCK:
            stack.close()


def _install(
    stack: ExitStack,
    chosen: list[tuple[str, nn.Module]],
    hf_layers: list[nn.Module],
    listener: Listener | None,
    edit: Edit | None,
) -> None:
    for name, module in chosen:
        for registry, entry in ((ACTIVE, listener), (EDITS, edit)):
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
    for module in hf_layers:
        switch = functools.partial(hf.switched, module)
        stack.enter_context(_shared(("config", id(module)), switch))
        frames = functools.partial(hf.framed, [module])
        stack.enter_context(_shared(("frames", id(module)), frames))


def _forget(registry: dict, module: nn.Module, entry: object) -> None:
    entries = registry.get(id(module), [])
    entries[:] = [(e, n) for e, n in entries if e is not entry]
    if not entries:
        registry.pop(id(module), None)
