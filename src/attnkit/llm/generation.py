"""``generate()``: Hugging Face generation with attention signals for every new token.

One call runs ``model.generate`` inside :func:`attnkit.capture`, which streams per-query
statistics of each decoding step's last query (no ``N × N`` matrix, sdpa kept) for every layer,
and turns them into a :class:`GenerationTrace` per prompt: per new token, layer and head, the
lookback ratio, entropy, sink mass, largest weight and retrieval hits. Several prompts run as one
left-padded batch; every statistic is taken relative to each example's own tokens (its context
span, its first token as the sink), so a batched trace equals the trace of the prompt alone.

Encoder-decoder models (T5, BART, ...) read their source through cross-attention, where
contextual hallucination was first measured (summarization): the prompt is the source, and the
signals are those of the decoder's cross-attention layers over it, the source right-padded (so
that absolute position embeddings do not move). There every cross-attention row sums to one over
the source, so the lookback ratio is the share of it on the context, ``mass:context``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from attnkit.llm.signals import lookback_ratio, retrieval_hits
from attnkit.recording import attention_layers, capture

__all__ = ["GenerationTrace", "add_trace_hook", "generate"]

log = logging.getLogger(__name__)

Context = str | tuple[int, int]
_SUPPORTED = (
    "a Hugging Face causal LM (AutoModelForCausalLM: Llama, Qwen2, GPT-2, ...) or text "
    "encoder-decoder (T5, BART) with generate() and attn_implementation 'sdpa' or 'eager'"
)
# the names transformers gives decoder cross-attention layers (BART/Whisper/Marian, T5, BERT-like)
_CROSS = ("encoder_attn", "EncDecAttention", "crossattention", "cross_attn")


@dataclass(frozen=True)
class GenerationTrace:
    """Signals of one generation. Per-token tensors are ``(n, L, H)`` for ``n`` new tokens.

    The new tokens stop at the first end-of-sequence token (kept); in a batch, the padding after
    an example's end is not part of its trace.
    """

    text: str
    prompt_ids: Tensor  # (P,) the prompt's own tokens, without padding
    new_ids: Tensor  # (n,)
    context: tuple[int, int]  # token positions of the context in the prompt
    layers: list[str]
    lookback_ratio: Tensor
    entropy: Tensor
    sink: Tensor  # weight on the prompt's first token
    max_weight: Tensor
    retrieval: Tensor  # boolean: the head copied this token from the context
    # (n, C): each new token's weight on each context token, mean over layers and heads; exact
    # weights of the step's query, recorded with generate(..., context_weights=True)
    context_weights: Tensor | None = None

    @property
    def retrieval_score(self) -> Tensor:
        """Share of steps on which each head copied from the context, ``(L, H)``."""
        return self.retrieval.float().mean(0)

    def _repr_html_(self) -> str:
        """The notebook view (:func:`attnkit.views.trace_view`; token ids, as the trace holds no
        tokenizer: ``trace_view(trace, tokenizer)`` shows their text)."""
        from attnkit.views import trace_view

        return trace_view(self).html


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


def _check_model(model: nn.Module) -> None:
    config = getattr(model, "config", None)
    if not isinstance(model, nn.Module) or not callable(getattr(model, "generate", None)):
        raise TypeError(f"model must be {_SUPPORTED}, got {type(model).__name__}")
    if config is None:
        raise ValueError(f"model must be {_SUPPORTED}; {type(model).__name__} has no config")
    if getattr(config, "is_encoder_decoder", False) and not _cross_layers(model):
        raise ValueError(
            f"model must be {_SUPPORTED}; no cross-attention layer of {type(model).__name__} "
            "dispatches through transformers' AttentionInterface"
        )
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in ("sdpa", "eager"):
        raise ValueError(
            f"model must be {_SUPPORTED}; it uses attn_implementation {implementation!r}, which "
            "capture() cannot read: load it with attn_implementation='sdpa'"
        )
    if not attention_layers(model):
        raise ValueError(
            f"model must be {_SUPPORTED}; no attention layer of {type(model).__name__} "
            "dispatches through transformers' AttentionInterface, so capture() cannot see it"
        )


def _cross_layers(model: nn.Module) -> list[str]:
    """The decoder cross-attention layers capture can read, in forward order."""
    return [name for name in attention_layers(model) if name.split(".")[-1] in _CROSS]


def _check_prompts(prompts: object) -> list[str]:
    batch = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(batch, Sequence) or not all(isinstance(p, str) for p in batch):
        raise TypeError(f"prompts must be a str or a list of str, got {prompts!r:.80}")
    if not batch:
        raise ValueError("prompts must not be an empty list")
    for i, prompt in enumerate(batch):
        if not prompt:
            where = "prompt" if isinstance(prompts, str) else f"prompts[{i}]"
            raise ValueError(f"{where} must not be empty")
    return list(batch)


def _is_context(context: object) -> bool:
    if isinstance(context, str):
        return True
    return (
        isinstance(context, tuple | list)
        and len(context) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in context)
    )


def _check_contexts(context: object, count: int, single: bool) -> list[Context]:
    if _is_context(context):
        return [context if isinstance(context, str) else tuple(context)] * count
    if single or not isinstance(context, Sequence) or len(context) != count:
        expected = "" if single else f", or a list of {count} of them (one per prompt)"
        raise TypeError(
            f"context must be a substring of the prompt or (start, stop) token positions"
            f"{expected}, got {context!r:.80}"
        )
    for i, one in enumerate(context):
        if not _is_context(one):
            raise TypeError(
                f"context[{i}] must be a substring of prompts[{i}] or (start, stop) token "
                f"positions, got {one!r:.80}"
            )
    return [c if isinstance(c, str) else tuple(c) for c in context]


def _encode(tokenizer, prompt: str, context: Context, where: str) -> tuple[Tensor, tuple[int, int]]:
    """The prompt's token ids ``(P,)`` and the context's token span in them."""
    if not isinstance(context, str):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"][0]
        start, stop = context
        if not 0 <= start < stop <= len(ids):
            raise ValueError(
                f"{where} must be (start, stop) token positions with 0 <= start < stop <= "
                f"{len(ids)} (the prompt's length), got {context}"
            )
        return ids, (start, stop)
    start_char = prompt.find(context)
    if not context or start_char < 0:
        raise ValueError(
            f"{where} must be a non-empty substring of the prompt, got {context!r:.80}"
        )
    try:  # character offsets map a context given as text to token positions
        encoded = tokenizer(prompt, return_tensors="pt", return_offsets_mapping=True)
    except NotImplementedError as error:
        raise ValueError(
            f"{where} given as text needs a fast tokenizer (offset mapping): pass token positions"
        ) from error
    stop_char = start_char + len(context)
    offsets = encoded["offset_mapping"][0].tolist()
    inside = [i for i, (a, b) in enumerate(offsets) if b > start_char and a < stop_char]
    return encoded["input_ids"][0], (inside[0], inside[-1] + 1)


def _end_ids(model: nn.Module, generate_kwargs: dict) -> set[int]:
    eos = generate_kwargs.get("eos_token_id", model.generation_config.eos_token_id)
    return set() if eos is None else {int(e) for e in (eos if isinstance(eos, list) else [eos])}


def _until_end(new_ids: Tensor, ends: set[int]) -> Tensor:
    """The generated ids up to and including the first end-of-sequence token."""
    stop_at = [i for i, token in enumerate(new_ids.tolist()) if token in ends]
    return new_ids[: stop_at[0] + 1] if stop_at else new_ids


def _per_token(recorded: dict, layers: Sequence[str], b: int, steps: int, name: str) -> Tensor:
    """Example ``b``'s statistic ``name`` for its ``steps`` tokens: ``(n, L, H)`` (one recorded
    row per call: the prompt's last query makes token 0, each step the next)."""
    rows = [recorded[name][layer][b, :, :steps] for layer in layers]
    return torch.stack(rows).permute(2, 0, 1).cpu()


def _leaned(
    weights: dict, layers: Sequence[str], b: int, steps: int, span: tuple[int, int]
) -> Tensor:
    """Mean weight over layers and heads of each of the ``steps`` tokens on the context's
    positions ``span`` of example ``b``: ``(n, C)``."""
    rows = [weights[layer][b, :, :steps, span[0] : span[1]] for layer in layers]
    return torch.stack(rows).mean((0, 1)).float().cpu()


def generate(
    model: nn.Module,
    tokenizer,
    prompts: str | Sequence[str],
    context: Context | Sequence[Context],
    max_new_tokens: int = 32,
    context_weights: bool = False,
    **generate_kwargs,
) -> GenerationTrace | list[GenerationTrace]:
    """Generate continuations of ``prompts`` and trace how they attend to their context.

    Args:
        model: a Hugging Face causal LM or text encoder-decoder model (``sdpa`` or ``eager``);
            for an encoder-decoder the prompt is the source and the signals are those of the
            decoder's cross-attention over it (module docstring).
        tokenizer: its tokenizer.
        prompts: one prompt (context, question, ...) or a list of them, run as one left-padded
            batch: each example's signals ignore its padding.
        context: the context, as a substring of the prompt or ``(start, stop)`` token positions;
            one for every prompt, or a list with one per prompt.
        max_new_tokens: passed to ``model.generate``, as are ``generate_kwargs`` (greedy or
            sampling; one sequence per prompt: no beams, no ``num_return_sequences``).
        context_weights: also record each new token's weight on each context token (the exact
            weights of one query row per step and layer), as ``trace.context_weights``.

    Returns:
        A :class:`GenerationTrace` for a prompt given as a string, a list of them for a list;
        every registered trace hook (:func:`add_trace_hook`) is called with each.
    """
    _check_model(model)
    batch = _check_prompts(prompts)
    single = isinstance(prompts, str)
    contexts = _check_contexts(context, len(batch), single)
    for option in ("num_beams", "num_return_sequences"):
        if generate_kwargs.get(option, getattr(model.generation_config, option, 1) or 1) != 1:
            raise ValueError(f"{option} must be 1 (one traced sequence per prompt)")
    encoded = [
        _encode(tokenizer, p, c, "context" if single else f"context[{i}]")
        for i, (p, c) in enumerate(zip(batch, contexts, strict=True))
    ]
    pad_id = next(
        (i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None),
        model.generation_config.pad_token_id or 0,  # masked out: its value does not matter
    )
    if getattr(model.config, "is_encoder_decoder", False):
        traces = _generate_seq2seq(
            model, tokenizer, encoded, pad_id, max_new_tokens, context_weights, generate_kwargs
        )
        return traces[0] if single else traces
    width = max(len(ids) for ids, _ in encoded)
    pads = torch.tensor([width - len(ids) for ids, _ in encoded])  # left padding, (B,)
    input_ids = torch.stack(
        [
            torch.cat([ids.new_full((int(p),), pad_id), ids])
            for (ids, _), p in zip(encoded, pads, strict=True)
        ]
    )
    attention_mask = (torch.arange(width)[None] >= pads[:, None]).long()  # (B, P)
    starts = torch.tensor([span[0] for _, span in encoded]) + pads
    stops = torch.tensor([span[1] for _, span in encoded]) + pads
    if pads.any():  # each example's own context and first token
        spans = {"context": (starts, stops), "first": (pads, pads + 1), "prompt": (0, width)}
    else:
        spans = {"context": (int(starts[0]), int(stops[0])), "first": (0, 1), "prompt": (0, width)}
    generate_kwargs.setdefault("pad_token_id", pad_id)
    stats = ("entropy", "max", "argmax")
    with (
        torch.no_grad(),
        capture(
            model,
            stats=stats,
            spans=spans,
            last_query=True,
            weights=context_weights,
            deferred=True,
        ) as rec,
    ):
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            **generate_kwargs,
        )
    output = output.cpu()
    recorded = rec.stats  # joins every call's rows once
    weights = rec.weights if context_weights else {}
    ends = _end_ids(model, generate_kwargs)
    traces = []
    for b, (prompt_ids, span) in enumerate(encoded):
        new_ids = _until_end(output[b, width:], ends)
        steps = len(new_ids)

        def per_token(name: str, b: int = b, steps: int = steps) -> Tensor:
            return _per_token(recorded, rec.layers, b, steps, name)  # (n, L, H)

        new_counts = torch.arange(steps)  # generated tokens visible to each step's query
        ratio = lookback_ratio(
            per_token("mass:context"),
            per_token("mass:prompt"),
            span[1] - span[0],
            new_counts[:, None, None],
        )
        padded_span = (int(starts[b]), int(stops[b]))
        hits = retrieval_hits(per_token("argmax"), output[b], new_ids[:, None, None], padded_span)
        leaned = _leaned(weights, rec.layers, b, steps, padded_span) if context_weights else None
        trace = GenerationTrace(
            text=tokenizer.decode(new_ids, skip_special_tokens=True),
            prompt_ids=prompt_ids,
            new_ids=new_ids,
            context=span,
            layers=list(rec.layers),
            lookback_ratio=ratio,
            entropy=per_token("entropy"),
            sink=per_token("mass:first"),
            max_weight=per_token("max"),
            retrieval=hits,
            context_weights=leaned,
        )
        _run_hooks(trace)
        traces.append(trace)
    return traces[0] if single else traces


def _generate_seq2seq(
    model: nn.Module,
    tokenizer,
    encoded: list[tuple[Tensor, tuple[int, int]]],
    pad_id: int,
    max_new_tokens: int,
    context_weights: bool,
    generate_kwargs: dict,
) -> list[GenerationTrace]:
    """:func:`generate` for encoder-decoder models: signals of cross-attention over the source.

    The sources are right-padded, so every example keeps its own positions; each step's
    cross-attention row of every decoder layer is recorded (``(B, H, 1, S)`` per step). The block
    holds this one generation, so the steps' statistics over the cached source are computed
    together when it ends (``deferred=True``).
    """
    layers = _cross_layers(model)
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.stack(
        [torch.cat([ids, ids.new_full((width - len(ids),), pad_id)]) for ids, _ in encoded]
    )  # (B, S)
    attention_mask = torch.stack(
        [(torch.arange(width) < len(ids)).long() for ids, _ in encoded]
    )  # (B, S)
    starts = torch.tensor([span[0] for _, span in encoded])
    stops = torch.tensor([span[1] for _, span in encoded])
    if bool((starts == starts[0]).all() and (stops == stops[0]).all()):
        context = (int(starts[0]), int(stops[0]))
    else:
        context = (starts, stops)
    spans = {"context": context, "first": (0, 1)}
    generate_kwargs.setdefault("pad_token_id", pad_id)
    stats = ("entropy", "max", "argmax")
    with (
        torch.no_grad(),
        capture(
            model, stats=stats, spans=spans, last_query=True, weights=context_weights,
            layers=layers, deferred=True,
        ) as rec,
    ):  # fmt: skip
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            **generate_kwargs,
        )
    output = output.cpu()
    recorded = rec.stats
    weights = rec.weights if context_weights else {}
    ends = _end_ids(model, generate_kwargs)
    traces = []
    for b, (source_ids, span) in enumerate(encoded):
        new_ids = _until_end(output[b, 1:], ends)  # after the decoder's start token
        steps = len(new_ids)

        def per_token(name: str, b: int = b, steps: int = steps) -> Tensor:
            return _per_token(recorded, layers, b, steps, name)  # (n, L, H)

        hits = retrieval_hits(per_token("argmax"), input_ids[b], new_ids[:, None, None], span)
        leaned = _leaned(weights, layers, b, steps, span) if context_weights else None
        trace = GenerationTrace(
            text=tokenizer.decode(new_ids, skip_special_tokens=True),
            prompt_ids=source_ids,
            new_ids=new_ids,
            context=span,
            layers=list(layers),
            lookback_ratio=per_token("mass:context"),
            entropy=per_token("entropy"),
            sink=per_token("mass:first"),
            max_weight=per_token("max"),
            retrieval=hits,
            context_weights=leaned,
        )
        _run_hooks(trace)
        traces.append(trace)
    return traces
