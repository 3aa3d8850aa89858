"""Hugging Face transformers attention layers, captured through a name of their own.

transformers picks a model's attention function by name: ``config._attn_implementation`` is looked
up in ``AttentionInterface`` (and the mask builder in ``AttentionMaskInterface``). For the block,
each captured layer gets its own copy of its config, naming a dispatcher that attnkit registers
once per original implementation through the public ``register`` methods,
``attnkit_capture_sdpa`` and ``attnkit_capture_eager`` (with the original's own mask builder).
The model's config is not touched: the masks are built as they would have been, and every other
layer (the model's own left out with ``layers=[...]``) and every other model in the process, in
this thread or another, runs untouched, at no cost.

Layers are found by type: the innermost modules of a ``transformers.models`` package whose class
name holds ``Attention`` and that hold a transformers config.

What is read exactly:

- masks as transformers builds them for ``sdpa`` (boolean) and ``eager`` (additive, read as a
  boolean mask when it holds only 0 and the dtype's minimum), and no mask: causal attention
  aligned top-left, the keys cut to the queries, as the ``sdpa`` integration does (the prefill of
  an empty static cache);
- T5's ``position_bias`` and Gemma 2's logit soft-cap (``softcap``);
- every cache layer: a forward pre-hook reads, from the layer's cache before it is updated, how
  many tokens it has seen and where its keys start (``get_seq_length``, ``get_mask_sizes``), so that
  sliding-window layers and static caches are recorded in absolute positions
  (:class:`attnkit.recording.dispatch.Frame`), whatever the keyword the cache comes by
  (``cache``, ``past_key_values``, ``past_key_value``, GPT-NeoX's and Falcon's ``layer_past``);
  the same hook tells a deferred block which calls extend the keys of the call before
  (:mod:`attnkit.recording.deferred`).

What is refused at the start of the block, with the implementation to load instead:
``flash_attention_*``, ``flex_attention`` and any other implementation than ``sdpa``/``eager``;
learned attention sinks (``sinks``, gpt-oss); GPT-2's ``reorder_and_upcast_attn`` under ``eager``.
"""

from __future__ import annotations

import copy
import functools
import importlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor, nn

from attnkit.recording.dispatch import ACTIVE, EDITS, LOCK, Frame, attend

__all__ = ["check_supported", "is_hf_attention", "switched"]

READABLE = ("sdpa", "eager")
_PREFIX = "attnkit_capture_"
_frames = threading.local()  # id(module) -> Frame of the call under way, per thread
REUSED = Frame(-1, -1)  # a cross-attention call over the keys its cache already holds
_registered: set[str] = set()


def is_hf_attention(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers attention layer (the innermost one of its kind)."""
    if not _attention_type(type(module)) or not _has_config(module):
        return False
    return not any(
        _attention_type(type(child)) and _has_config(child) for child in module.modules()
        if child is not module
    )  # fmt: skip


@functools.cache
def _attention_type(cls: type) -> bool:
    return cls.__module__.startswith("transformers.models.") and "Attention" in cls.__name__


def _has_config(module: nn.Module) -> bool:
    config = getattr(module, "config", None)
    return config is not None and hasattr(config, "_attn_implementation_internal")


def base_implementation(name: str | None) -> str | None:
    """The implementation a config names, seen through an open block's dispatcher name."""
    if isinstance(name, str) and name.startswith(_PREFIX):
        return name.removeprefix(_PREFIX)
    return name


def check_supported(model: nn.Module, name: str, module: nn.Module) -> None:
    """Refuse, before anything is hooked, a layer whose attention capture cannot read exactly."""
    implementation = base_implementation(module.config._attn_implementation)
    if implementation not in READABLE:
        raise ValueError(
            f"capture() reads Hugging Face attention computed with attn_implementation 'sdpa' or "
            f"'eager'; layer {name!r} of {type(model).__name__} uses {implementation!r}, whose "
            "kernel does not expose what it computes. Load the model with "
            "attn_implementation='sdpa' (or call model.set_attn_implementation('sdpa')) to "
            "capture it; 'eager' also returns output_attentions"
        )
    if getattr(module, "sinks", None) is not None:
        raise ValueError(
            f"capture() cannot record layer {name!r} ({type(module).__name__}): its learned "
            "attention sinks (an extra softmax logit) are not read; leave it out with layers=[...]"
        )
    if implementation == "eager" and getattr(module, "reorder_and_upcast_attn", False):
        raise ValueError(
            f"layer {name!r} uses reorder_and_upcast_attn under 'eager', which bypasses the "
            "attention interface: load the model with attn_implementation='sdpa' to capture it"
        )


def _register(implementation: str) -> str:
    """The dispatcher's name for ``implementation``, registered once per process."""
    name = _PREFIX + implementation
    if name not in _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

        AttentionInterface.register(name, functools.partial(_dispatch, implementation))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[implementation])
        _registered.add(name)
    return name


@contextmanager
def switched(module: nn.Module) -> Iterator[None]:
    """Give ``module`` for the block a copy of its config that names attnkit's dispatcher for
    its implementation; its own config comes back on exit.

    The copy is the layer's alone: the model's config, its other layers (those left out with
    ``layers=[...]``, and the encoder's when only cross-attention is captured) and the mask
    builders keep the original name, so they run exactly as without capture, at no cost.
    """
    config = module.config
    own = copy.copy(config)  # shallow: every setting shared, the implementation name its own
    own._attn_implementation_internal = _register(config._attn_implementation_internal)
    module.config = own
    try:
        yield
    finally:
        module.config = config


@contextmanager
def framed(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Forward pre-hooks that read each call's key frame from the cache it is given."""
    with ExitStack() as stack:
        for module in modules:
            handle = module.register_forward_pre_hook(_read_frame, with_kwargs=True)
            stack.callback(handle.remove)
        yield


def _frames_here() -> dict[int, Frame | None]:
    try:
        return _frames.by_module
    except AttributeError:
        _frames.by_module = {}
        return _frames.by_module


def _read_frame(module: nn.Module, args: tuple, kwargs: dict) -> None:
    """Where this call's keys will sit: tokens the cache has seen, where its window starts."""
    frames = _frames_here()
    frames[id(module)] = None
    get = kwargs.get
    cache = get("cache")
    if cache is None:
        cache = get("past_key_values")
    if cache is None:
        cache = get("past_key_value")
    if cache is None:
        cache = get("layer_past")  # GPT-NeoX, Falcon
    index = getattr(module, "layer_idx", None)
    if get("key_value_states") is not None or get("encoder_hidden_states") is not None:
        # cross-attention: the keys are the whole source, position j is j; the cache says
        # whether this call reuses the keys it holds or writes them (maybe in place: rows
        # still waiting for their statistics over them are computed first)
        updated = getattr(cache, "is_updated", None)
        if isinstance(updated, dict) and updated.get(index):
            frames[id(module)] = REUSED
        else:
            for listener, layer in ACTIVE.get(id(module), ()):
                listener._flush(layer)
        return
    if cache is None or index is None:
        return
    cache = getattr(cache, "self_attention_cache", cache)  # encoder-decoder caches
    layers = getattr(cache, "layers", None)
    if layers is None or not 0 <= index < len(layers):
        return
    layer = layers[index]
    try:
        seen = int(layer.get_seq_length())
        _, offset = layer.get_mask_sizes(1)  # where the window starts: not on the query count
    except (AttributeError, TypeError, NotImplementedError):
        return
    # a plain growing cache (no window, no quantization) appends this call's keys to the tensors
    # it holds now by concatenation: they stay as they are, a prefix of the call's keys
    grows_from = (layer.keys, layer.values) if seen and type(layer) is _growing_layer() else None
    frames[id(module)] = (seen, int(offset), grows_from)


@functools.cache
def _growing_layer() -> type | None:
    """transformers' ``DynamicLayer`` (keys grown by concatenation), where it has one."""
    return getattr(importlib.import_module("transformers.cache_utils"), "DynamicLayer", None)


@functools.cache
def _module_eager(cls: type) -> Callable | None:
    """The ``eager_attention_forward`` of the modeling file that defines ``cls``."""
    return getattr(importlib.import_module(cls.__module__), "eager_attention_forward", None)


def _original(module: nn.Module, implementation: str) -> Callable:
    from transformers import AttentionInterface

    default = _module_eager(type(module))
    if implementation == "eager":
        if default is None:
            raise RuntimeError(
                f"{type(module).__name__}'s modeling file has no eager_attention_forward to run "
                "it with under capture(); load the model with attn_implementation='sdpa'"
            )
        return default
    return AttentionInterface().get_interface(implementation, default)


def _boolean(mask: Tensor) -> Tensor | None:
    """An additive mask holding only 0 and its dtype's minimum as a boolean one, else None."""
    lowest = torch.finfo(mask.dtype).min
    allowed = mask == 0
    return allowed if bool((allowed | (mask == lowest)).all()) else None


def _dispatch(implementation: str, module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The attention function of a captured model's layers under ``implementation``."""
    frame = _frames_here().pop(id(module), None)
    previous = None  # the keys and values this call's keys extend (rows may wait over them)
    if frame is REUSED:
        frame, previous = None, REUSED
    if id(module) not in ACTIVE and id(module) not in EDITS:  # a layer left out: as it was
        return _original(module, implementation)(
            module, query, key, value, attention_mask, **kwargs
        )
    if kwargs.get("s_aux") is not None:
        raise ValueError(
            f"capture() cannot record {type(module).__name__}: its learned attention sinks "
            "(s_aux) are not read; leave this layer out with layers=[...]"
        )
    if hasattr(attention_mask, "mask_mod"):  # a BlockMask: flex_attention is refused at start
        raise ValueError("capture() cannot read a flex_attention BlockMask: load with 'sdpa'")
    dropout = kwargs.get("dropout", 0.0)
    scaling = kwargs.get("scaling")
    softcap = kwargs.get("softcap")
    is_causal = kwargs.get("is_causal")
    mask, bias = None, None
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            mask = attention_mask
        else:
            mask = _boolean(attention_mask)
            bias = attention_mask.to(query.dtype) if mask is None else None
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:
        position_bias = position_bias.to(query.dtype)
        bias = position_bias if bias is None else bias + position_bias
    num_queries, num_keys = query.shape[-2], key.shape[-2]
    if is_causal is None:
        is_causal = getattr(module, "is_causal", implementation == "sdpa")
    # sdpa without a mask: causal aligned top-left (torch's is_causal), keys cut to the queries;
    # eager without a mask attends everywhere
    causal = implementation == "sdpa" and bool(is_causal) and attention_mask is None
    causal = causal and num_queries > 1
    keep = num_keys
    if causal and num_keys > num_queries:
        keep = num_queries
    absolute = None
    if frame is not None:
        seen, offset, previous = frame
        total = seen + num_queries
        if causal and keep < num_keys:  # a prefill of an empty static cache
            total = max(total, keep)
        if 0 < total - offset <= num_keys:
            keep = min(keep, total - offset)  # a static cache's empty slots: never attended
            absolute = Frame(offset, total)
    if keep < num_keys:
        key, value = key[..., :keep, :], value[..., :keep, :]
        mask = None if mask is None else mask[..., :keep]
        bias = None if bias is None else bias[..., :keep]
    output, weights = attend(
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
        softcap=softcap,
        frame=absolute,
        previous=(key, value) if previous is REUSED else previous,
    )
    if weights is not None and keep < num_keys:  # eager returns the weights over every slot
        weights = torch.nn.functional.pad(weights, (0, num_keys - keep))
    return output.transpose(1, 2).contiguous(), weights


__all__ += ["LOCK", "base_implementation", "framed"]
