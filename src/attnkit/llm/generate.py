"""``generate()``: Hugging Face generation with attention signals for every new token.

One call runs ``model.generate`` inside :func:`attnkit.capture`, which streams per-query
statistics (no ``N × N`` matrix, sdpa kept) for every layer, and turns them into a
:class:`GenerationTrace`: per new token, layer and head, the lookback ratio, entropy, sink mass,
largest weight and retrieval hits.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from attnkit.capture import capture
from attnkit.llm.signals import lookback_ratio, retrieval_hits

__all__ = ["GenerationTrace", "add_trace_hook", "generate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationTrace:
    """Signals of one generation. Per-token tensors are ``(n, L, H)`` for ``n`` new tokens."""

    text: str
    prompt_ids: Tensor  # (P,)
    new_ids: Tensor  # (n,)
    context: tuple[int, int]  # token positions of the context in the prompt
    layers: list[str]
    lookback_ratio: Tensor
    entropy: Tensor
    sink: Tensor
    max_weight: Tensor
    retrieval: Tensor  # boolean: the head copied this token from the context

    @property
    def retrieval_score(self) -> Tensor:
        """Share of steps on which each head copied from the context, ``(L, H)``."""
        return self.retrieval.float().mean(0)


TraceHook = Callable[[GenerationTrace], None]
_TRACE_HOOKS: OrderedDict[int, TraceHook] = OrderedDict()  # weakly referenced by the handles


def add_trace_hook(fn: TraceHook) -> RemovableHandle:
    """Call ``fn(trace)`` with every trace :func:`generate` returns (one call per example).

    A hook that raises is logged and skipped; the generation is returned all the same.

    Returns:
        A handle; ``handle.remove()`` unregisters ``fn``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    handle = RemovableHandle(_TRACE_HOOKS)
    _TRACE_HOOKS[handle.id] = fn
    return handle


def _run_hooks(trace: GenerationTrace) -> None:
    for fn in list(_TRACE_HOOKS.values()):
        try:
            fn(trace)
        except Exception:  # a broken observer must not cost the caller its generation
            log.exception("trace hook %r failed", fn)


def _context_span(encoded, prompt: str, context: str | tuple[int, int], length: int):
    if isinstance(context, str):
        start_char = prompt.find(context)
        if not context or start_char < 0:
            raise ValueError("context must be a non-empty substring of the prompt")
        stop_char = start_char + len(context)
        offsets = encoded["offset_mapping"][0].tolist()
        inside = [i for i, (a, b) in enumerate(offsets) if b > start_char and a < stop_char]
        return inside[0], inside[-1] + 1
    start, stop = context
    if not 0 <= start < stop <= length:
        raise ValueError(
            f"context must be (start, stop) token positions with 0 <= start < stop <= {length} "
            f"(the prompt's length), got {context}"
        )
    return int(start), int(stop)


def generate(
    model: nn.Module,
    tokenizer,
    prompt: str,
    context: str | tuple[int, int],
    max_new_tokens: int = 32,
    **generate_kwargs,
) -> GenerationTrace:
    """Generate a continuation of ``prompt`` and trace how it attends to ``context``.

    Args:
        model: a Hugging Face causal LM (``sdpa`` or ``eager``).
        tokenizer: its tokenizer.
        prompt: the full prompt text (context, question, ...).
        context: the context, as a substring of ``prompt`` or ``(start, stop)`` token positions.
        max_new_tokens: passed to ``model.generate``, as are ``generate_kwargs``.

    Returns:
        A :class:`GenerationTrace` for the new tokens.
    """
    if not prompt:
        raise ValueError("prompt must not be empty")
    # character offsets map a context given as text to token positions
    text_context = isinstance(context, str)
    encoded = tokenizer(prompt, return_tensors="pt", return_offsets_mapping=text_context)
    prompt_ids = encoded["input_ids"]
    length = prompt_ids.shape[1]
    span = _context_span(encoded, prompt, context, length)
    stats = ("entropy", "max", "argmax", "sink")
    spans = {"context": span, "prompt": (0, length)}
    with torch.no_grad(), capture(model, stats=stats, spans=spans, last_query=True) as rec:
        output = model.generate(
            input_ids=prompt_ids.to(model.device),
            attention_mask=encoded["attention_mask"].to(model.device),
            max_new_tokens=max_new_tokens,
            **generate_kwargs,
        )
    sequence = output[0].cpu()
    new_ids = sequence[length:]
    steps = len(new_ids)

    recorded = rec.stats  # joins every call's rows once

    def per_token(name: str) -> Tensor:
        # one row per call: the prompt's last query makes token 0, each decoding step the next
        rows = [recorded[name][layer][0, :, :steps] for layer in rec.layers]
        return torch.stack(rows).permute(2, 0, 1).cpu()  # (n, L, H)

    new_counts = torch.arange(steps)  # generated tokens visible to each step's query
    ratio = lookback_ratio(
        per_token("mass:context"),
        per_token("mass:prompt"),
        span[1] - span[0],
        new_counts[:, None, None],
    )
    hits = retrieval_hits(per_token("argmax"), sequence, new_ids[:, None, None], span)
    trace = GenerationTrace(
        text=tokenizer.decode(new_ids, skip_special_tokens=True),
        prompt_ids=prompt_ids[0],
        new_ids=new_ids,
        context=span,
        layers=list(rec.layers),
        lookback_ratio=ratio,
        entropy=per_token("entropy"),
        sink=per_token("sink"),
        max_weight=per_token("max"),
        retrieval=hits,
    )
    _run_hooks(trace)
    return trace
