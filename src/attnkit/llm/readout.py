"""Per-answer signals for hallucination detectors: one teacher-forced pass over prompt + answer.

:func:`read_answers` replays each generated answer (``prompt_ids + new_ids``) through the model
once and reads, at the query that produced each new token ``t`` (position ``P - 1 + t``, the
convention of :func:`attnkit.llm.generate`), for every layer ``l`` and head ``h``:

- ``context_mass[t, l, h]``: weight on the context span, **streamed** by
  :func:`attnkit.capture` (``mass:context``, no ``Q × K`` matrix);
- ``lookback_ratio``, ``retrieval``: taken from the :class:`~attnkit.llm.generation.GenerationTrace`
  (streamed during generation);
- ``log_diag[t, l, h] = log a_tt``: the weight of the query on its own position (LLM-Check,
  Sriramanan et al. 2024). ``attnkit.capture`` has no streamed statistic for it, so it is
  **read from the weights** (``capture(weights=True)``): exact, and cheap on the tiny testbed
  models, ``O(Q·K)`` memory on large ones;
- ``ecs[t, l, h]``: ReDeEP's external-context score (Sun et al. 2025),
  ``cos(x_t^L, mean_{j ∈ top-k_{l,h}(t)} x_j^L)``: the cosine between the last layer's hidden
  state at the query and the mean last-layer hidden state of the ``k`` context tokens head
  ``(l, h)`` attends to most (``k = ceil(ecs_top · |context|)``). Top-k needs the weight rows:
  **read from the weights**, as ``log_diag``;

and, per layer,

- ``pks[t, l]``: ReDeEP's parametric-knowledge score, the Jensen–Shannon divergence between the
  logit-lens distributions (``softmax(W_U · norm(x))``, nostalgebraist 2020) of the residual
  stream before and after layer ``l``'s MLP: how much the MLP changed the predicted token;
- ``hidden[l]``: the mean over answer tokens of layer ``l``'s output (for the probe);

and per token the model's own ``log_prob`` of the generated token and the ``entropy`` of its
next-token distribution. Supported: Hugging Face Llama-family models (``model.model.layers``
with ``post_attention_layernorm``, ``model.model.norm``, ``model.lm_head``), as the testbeds load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.llm.generation import GenerationTrace
from attnkit.recording import capture

__all__ = ["AnswerSignals", "read_answers"]


@dataclass(frozen=True)
class AnswerSignals:
    """Signals of one answer of ``n`` tokens from a model of ``L`` layers, ``H`` heads, width
    ``D``. Tensors are float32 on the CPU."""

    lookback_ratio: Tensor  # (n, L, H) from generation (Chuang et al. 2024)
    retrieval: Tensor  # (n, L, H) bool: the head copied this token from the context (Wu et al.)
    context_mass: Tensor  # (n, L, H) weight on the context (streamed)
    log_diag: Tensor  # (n, L, H) log of the query's weight on itself (from weights)
    ecs: Tensor  # (n, L, H) external-context score (from weights and hidden states)
    pks: Tensor  # (n, L) parametric-knowledge score: JSD before/after each MLP (logit lens)
    log_prob: Tensor  # (n,) log-probability of each generated token
    entropy: Tensor  # (n,) entropy of each next-token distribution (nats)
    hidden: Tensor  # (L, D) mean over the answer of each layer's output

    @property
    def length(self) -> int:
        return int(self.log_prob.shape[0])


def _jsd(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Jensen–Shannon divergence (nats) between distributions given as log-probabilities."""
    p, q = log_p.exp(), log_q.exp()
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), 0) - math.log(2)
    jsd = 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1))
    return jsd.clamp_min(0.0)  # rounding can leave -1e-9 where the two agree


def _check(model, traces) -> tuple[list, list[GenerationTrace]]:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(model, "lm_head") or not hasattr(inner, "norm"):
        raise TypeError(
            "model must be a Hugging Face Llama-family causal LM (model.model.layers, "
            f"model.model.norm, model.lm_head), got {type(model).__name__}"
        )
    traces = [getattr(t, "trace", t) for t in traces]  # LabelledTrace or GenerationTrace
    for i, trace in enumerate(traces):
        if not isinstance(trace, GenerationTrace):
            raise TypeError(f"traces[{i}] must be a GenerationTrace, got {type(trace).__name__}")
        if len(trace.new_ids) == 0:
            raise ValueError(f"traces[{i}] has no generated tokens")
    return list(layers), traces


def read_answers(
    model, traces: Sequence, batch_size: int = 32, ecs_top: float = 0.1
) -> list[AnswerSignals]:
    """Signals of each answer (a :class:`GenerationTrace` or anything with ``.trace``).

    Answers run in right-padded batches of ``batch_size`` (causal attention: the padding after
    a sequence changes none of its queries).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0.0 < ecs_top <= 1.0:
        raise ValueError(f"ecs_top must be in (0, 1], got {ecs_top}")
    layers, traces = _check(model, traces)
    out: list[AnswerSignals] = []
    for first in range(0, len(traces), batch_size):
        out += _read_batch(model, layers, traces[first : first + batch_size], ecs_top)
    return out


def _read_batch(model, layers, traces: list[GenerationTrace], ecs_top: float):
    device = model.device
    rows = [torch.cat([t.prompt_ids, t.new_ids]) for t in traces]
    width = max(len(r) for r in rows)
    pad = 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = row
        mask[b, : len(row)] = 1
    starts = torch.tensor([t.context[0] for t in traces])
    stops = torch.tensor([t.context[1] for t in traces])
    mids: dict[int, Tensor] = {}
    outs: dict[int, Tensor] = {}
    handles = []
    for i, layer in enumerate(layers):

        def before_mlp(module, args, i=i):  # the residual stream entering the MLP's norm
            mids[i] = args[0].detach()

        def after_layer(module, args, output, i=i):
            outs[i] = (output[0] if isinstance(output, tuple) else output).detach()

        handles.append(layer.post_attention_layernorm.register_forward_pre_hook(before_mlp))
        handles.append(layer.register_forward_hook(after_layer))
    try:
        with (
            torch.no_grad(),
            capture(model, stats=(), spans={"context": (starts, stops)}, weights=True) as rec,
        ):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    finally:
        for handle in handles:
            handle.remove()
    names = list(rec.layers)
    mass = torch.stack([rec.stats["mass:context"][n] for n in names], 1).float().cpu()  # (B,L,H,Q)
    weights = torch.stack([rec.weights[n] for n in names], 1).float().cpu()  # (B, L, H, Q, K)
    norm, head = model.model.norm, model.lm_head
    num_layers = len(layers)
    signals = []
    for b, trace in enumerate(traces):
        prompt, n = len(trace.prompt_ids), len(trace.new_ids)
        queries = torch.arange(prompt - 1, prompt - 1 + n)  # (n,)
        start, stop = trace.context
        w = weights[b][:, :, queries]  # (L, H, n, K)
        diag = w[:, :, torch.arange(n), queries].clamp_min(1e-12).log()  # (L, H, n)
        top = max(1, math.ceil(ecs_top * (stop - start)))
        picked = w[..., start:stop].topk(top, -1).indices + start  # (L, H, n, top)
        last = outs[num_layers - 1][b].float().cpu()  # (T, D)
        attended = last[picked].mean(-2)  # (L, H, n, D)
        ecs = torch.cosine_similarity(attended, last[queries], dim=-1)  # (L, H, n)
        with torch.no_grad():
            lens_mid = torch.stack([head(norm(mids[i][b, queries])) for i in range(num_layers)])
            lens_out = torch.stack([head(norm(outs[i][b, queries])) for i in range(num_layers)])
            pks = _jsd(lens_mid.float().log_softmax(-1), lens_out.float().log_softmax(-1))
            log_probs = logits[b, queries].float().log_softmax(-1).cpu()  # (n, V)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        picked_log_prob = log_probs.gather(-1, trace.new_ids[:, None]).squeeze(-1)
        hidden = torch.stack([outs[i][b, queries].float().mean(0).cpu() for i in range(num_layers)])
        signals.append(
            AnswerSignals(
                lookback_ratio=trace.lookback_ratio.float(),
                retrieval=trace.retrieval,
                context_mass=mass[b][..., queries].permute(2, 0, 1).contiguous(),  # (n, L, H)
                log_diag=diag.permute(2, 0, 1).contiguous(),
                ecs=ecs.permute(2, 0, 1).contiguous(),
                pks=pks.T.cpu().contiguous(),  # (n, L)
                log_prob=picked_log_prob,
                entropy=entropy,
                hidden=hidden,
            )
        )
    return signals
