"""``capture()``: record attention weights and statistics from a model without editing it.

Works on every layer kind :mod:`attnkit.recording.hooks` supports. Everything is restored when the
block exits, even on an exception. Several blocks may be nested or repeated on one model; each
gets what it asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnkit.recording.deferred import Waiting
from attnkit.recording.hooks import check_layers, hooked
from attnkit.recording.stats import Span, check_stats

__all__ = ["Recording", "capture"]


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
        stats: ``{statistic: {layer: (B, H, Q)}}`` for the statistics asked for (reading it
            computes the rows a ``deferred`` block still holds).
    """

    layers: list[str]
    want_weights: bool
    want_stats: tuple[str, ...]
    spans: dict[str, Span]
    heads: list[int] | None
    want_grad: bool = False
    last_query: bool = False
    deferred: bool = False
    _weights: dict[str, list[Tensor]] = field(default_factory=dict, repr=False)
    _stats: dict[str, dict[str, list[Tensor]]] = field(default_factory=dict, repr=False)
    _waiting: dict[str, Waiting] = field(default_factory=dict, repr=False)

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
        if len(chunks) == 1:  # one call: the tensor the layer wrote, not a copy of it
            joined = chunks[0]
        else:  # one copy of each chunk, into its place (no padded intermediate)
            keys = max(chunk.shape[-1] for chunk in chunks)
            rows = sum(chunk.shape[-2] for chunk in chunks)
            joined = chunks[0].new_zeros(*chunks[0].shape[:-2], rows, keys)
            start = 0
            for chunk in chunks:
                joined[..., start : start + chunk.shape[-2], : chunk.shape[-1]] = chunk
                start += chunk.shape[-2]
        if self.want_grad and self.heads is not None:  # kept whole: the graph runs through it
            joined = joined[:, self.heads]
        return joined.detach()

    @property
    def stats(self) -> dict[str, dict[str, Tensor]]:
        self._flush()
        return {
            name: {layer: torch.cat(chunks, dim=-1) for layer, chunks in by_layer.items()}
            for name, by_layer in self._stats.items()
        }

    def _record(
        self,
        layer: str,
        weights: Tensor | None,
        stats: Mapping[str, Tensor],
        selected: bool = False,
    ) -> None:
        """Keep one call's weights ``(B, H, Q, K)`` and statistics ``(B, H, Q)``; ``selected``:
        they hold only :attr:`heads` already."""
        if self._waiting and layer in self._waiting:  # earlier rows of this layer come first
            self._flush(layer)
        pick = self.heads is not None and not selected
        if self.want_weights and weights is not None:
            if self.last_query:
                weights = weights[..., -1:, :]
            if self.want_grad and weights.requires_grad:
                weights.retain_grad()
            else:
                weights = weights.detach()
            if pick and not self.want_grad:  # with grad: whole, chosen when read
                weights = weights[:, self.heads]
            self._weights.setdefault(layer, []).append(weights)
        for name in self.want_stats:  # once per layer and decoding step: keep it lean
            chunk = stats[name]
            if chunk.requires_grad:
                chunk = chunk.detach()
            if pick:
                chunk = chunk[:, self.heads]
            if self.last_query and chunk.shape[-1] != 1:
                chunk = chunk[..., -1:]
            by_layer = self._stats.get(name)
            if by_layer is None:
                by_layer = self._stats[name] = {}
            chunks = by_layer.get(layer)
            if chunks is None:
                by_layer[layer] = [chunk]
            else:
                chunks.append(chunk)

    def _defer(
        self,
        layer: str,
        row: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None,
        bias: Tensor | None,
        scale: float | None,
        softcap: float | None,
        previous: tuple[Tensor, Tensor],
    ) -> None:
        """Keep a decoding step's query row ``(B, H, 1, D)`` over keys that extend
        ``previous``; its statistics come with the other rows' (:mod:`.deferred`)."""
        waiting = self._waiting.get(layer)
        if waiting is not None and not waiting.takes(key, value, previous, scale, softcap):
            self._flush(layer)
            waiting = None
        if waiting is None:
            waiting = self._waiting[layer] = Waiting(key, value, previous, scale, softcap)
        waiting.add(row, key, value, mask, bias)

    def _flush(self, layer: str | None = None) -> None:
        """Compute the statistics of the rows waiting in ``layer`` (default: every layer)."""
        for name in [layer] if layer is not None else list(self._waiting):
            waiting = self._waiting.pop(name, None)
            if waiting is None:
                continue
            for stat, chunk in waiting.stats(self.want_stats, self.spans).items():
                self._stats.setdefault(stat, {}).setdefault(name, []).append(chunk)

    def _repr_html_(self) -> str:
        """The notebook view (:func:`attnkit.views.recording_view`, token positions as labels)."""
        from attnkit.views import recording_view

        return recording_view(self).html


@contextmanager
def capture(
    model: nn.Module,
    weights: bool = False,
    stats: Iterable[str] = (),
    spans: Mapping[str, Span] | None = None,
    layers: Sequence[str] | None = None,
    heads: Sequence[int] | None = None,
    grad: bool = False,
    last_query: bool = False,
    deferred: bool = False,
) -> Iterator[Recording]:
    """Record attention from ``model`` while the block runs.

    Args:
        model: any module containing supported attention layers (see the module docstring).
        weights: record the exact per-head weights ``(B, H, Q, K)`` (materialized: ``O(N²)``).
        stats: per-query statistics computed without the ``N × N`` matrix: ``"entropy"``,
            ``"max"``, ``"argmax"``, ``"sink"``, ``"mass:<span>"``.
        spans: ``{name: (start, stop)}`` key positions; each adds ``"mass:<name>"``. A span may
            also be ``(starts, stops)``, two ``(B,)`` integer tensors: one range per example,
            for left-padded batches.
        layers: names (from ``model.named_modules()``) of the layers to record; default all.
        heads: head indices to keep; default all.
        grad: also keep the weights in the autograd graph, so that after ``backward()``
            ``rec.grads`` holds the gradient with respect to them (implies ``weights=True``).
        last_query: record only the last query of each call: with ``generate()``, one row per
            new token; the other queries run on the fused kernel with nothing computed for them
            (weights too, when asked for: ``(B, H, 1, K)`` per call, unless the model's own
            implementation returns the full weights, as ``eager`` does).
        deferred: with ``last_query``, let decoding steps over cached keys (cross-attention
            over a source, self-attention over a growing ``DynamicCache``) run on the fused
            kernel alone and compute their statistics together, one kernel call per layer when
            the block ends or ``rec.stats`` is read (generation with signals near the speed of
            plain ``generate()``; :mod:`attnkit.recording.deferred`). The same numbers. Cached
            keys must not be changed in place while the block runs: hold one ``generate()`` per
            block (reading the statistics raises otherwise).

    Yields:
        A :class:`Recording`, filled as the model runs.

    Example::

        with attnkit.capture(model, stats=("entropy",), spans={"context": (0, 120)}) as rec:
            model(**inputs)
        rec.stats["mass:context"]["model.layers.0.self_attn"]   # (B, H, Q)
    """
    names, spans = check_stats(stats, spans)
    chosen = check_layers(model, layers)
    if heads is not None and not all(isinstance(h, int) and h >= 0 for h in heads):
        raise ValueError(f"heads must be non-negative head indices, got {heads!r}")
    if grad and last_query:
        raise ValueError("grad=True records whole weight matrices; it cannot take last_query=True")
    if deferred and not last_query:
        raise ValueError("deferred=True computes the last query's statistics of each call later: "
                         "it needs last_query=True")  # fmt: skip
    recording = Recording(
        chosen,
        weights or grad,
        names,
        spans,
        None if heads is None else list(heads),
        grad,
        last_query,
        deferred,
    )
    try:
        with hooked(model, chosen, listener=recording):
            yield recording
    finally:
        recording._flush()  # the waiting rows' keys are released with the block
