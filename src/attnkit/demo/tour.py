"""The demo's first step: every mechanism run once on the same inputs, with its checks.

Each step computes something and checks it against a reference, so the tour doubles as a smoke
test of an installation: the backends against the ``"math"`` reference, KV-cache decoding
against the full causal run, streamed attention statistics against the materialized weights, and
the sparsity of each normalizer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from attnkit.attention import KVCache, MultiHeadAttention, SoftAttention, backends
from attnkit.demo.result import StepContext, StepResult, Table
from attnkit.recording import capture, stats_from_weights

__all__ = ["TourStep", "mechanisms_tour", "tour_step"]


@dataclass(frozen=True)
class TourStep:
    """One line of the tour: what ran, how far it is from its reference, how long it took."""

    name: str
    detail: str
    max_abs_error: float | None
    milliseconds: float


def _timed(fn):
    fn()  # warm-up: the first call of a kernel loads and plans it
    start = time.perf_counter()
    result = fn()
    return result, 1e3 * (time.perf_counter() - start)


def mechanisms_tour(length: int = 512, embed_dim: int = 64, num_heads: int = 4) -> list[TourStep]:
    """Run the mechanisms on one random batch and compare each with its reference."""
    torch.manual_seed(0)
    steps: list[TourStep] = []
    x = torch.randn(2, length, embed_dim)
    mha = MultiHeadAttention(embed_dim, num_heads, num_kv_heads=num_heads // 2, causal=True).eval()
    with torch.no_grad():
        reference, ms = _timed(lambda: mha(x, need_weights=True))
        steps.append(TourStep("math", "reference, returns (B, H, Q, K) weights", None, ms))
        for name in backends.available():
            if name in ("auto", "math"):
                continue
            mha.backend = name
            out, ms = _timed(lambda: mha(x))
            entry = backends.get(name)
            detail = "exact" if entry.exact else "approximation (not softmax attention)"
            error = (out.output - reference.output).abs().max().item()
            steps.append(TourStep(name, detail, error, ms))
        mha.backend = "auto"

        def decode() -> torch.Tensor:
            cache = KVCache()
            return torch.cat([mha(x[:, t : t + 1], cache=cache).output for t in range(length)], 1)

        decoded, ms = _timed(decode)
        error = (decoded - reference.output).abs().max().item()
        steps.append(TourStep("kv cache", f"{length} one-token steps vs full run", error, ms))

        stats = ("entropy", "max", "sink")
        expected = stats_from_weights(reference.weights, stats)

        def streamed() -> dict:
            with capture(mha, stats=stats) as rec:
                mha(x)
            return {name: rec.stats[name][""] for name in stats}

        got, ms = _timed(streamed)
        error = max((got[n] - expected[n]).abs().max().item() for n in stats)
        detail = "capture(): entropy, max, sink; no (Q, K) matrix past one tile; vs weights"
        steps.append(TourStep("capture", detail, error, ms))

    query, memory = torch.randn(1, 16), torch.randn(1, 32, 16)
    for normalizer in ("softmax", "sparsemax", "entmax15"):
        att = SoftAttention(16, 16, score="scaled_dot", normalizer=normalizer)
        out, ms = _timed(lambda att=att: att(query, memory))
        nonzero = int((out.weights > 0).sum())
        steps.append(TourStep(normalizer, f"{nonzero} of 32 keys get weight", None, ms))
    return steps


def tour_step(context: StepContext) -> StepResult:
    """The tour as a demo step: its table, the largest error of the exact paths, ``tour.json``."""
    length = context.sizes.tour_length
    context.progress(0, 1)
    steps = mechanisms_tour(length)
    context.progress(1, 1)
    rows = tuple(
        (
            step.name,
            step.detail,
            "" if step.max_abs_error is None else f"{step.max_abs_error:.1e}",
            f"{step.milliseconds:.1f}",
        )
        for step in steps
    )
    exact = [s.max_abs_error for s in steps if s.max_abs_error is not None and s.name != "linear"]
    worst = max(exact) if exact else 0.0
    notes = [
        f"Causal grouped-query self-attention over {length} tokens: every exact path (fused "
        f"SDPA, one-token KV-cache decoding, streamed statistics) agrees with the math "
        f"reference to {worst:.1e}."
    ]
    linear = next((s for s in steps if s.name == "linear"), None)
    if linear is not None and linear.max_abs_error is not None:
        notes.append(
            f"Linear attention is an approximation, not softmax attention: it differs from the "
            f"reference by {linear.max_abs_error:.2f}."
        )
    sparsity = {s.name: s.detail for s in steps if s.name in ("softmax", "sparsemax", "entmax15")}
    if sparsity:
        notes.append(
            "Normalizers over 32 keys: " + "; ".join(f"{k}: {v}" for k, v in sparsity.items()) + "."
        )
    payload = [step.__dict__ for step in steps]
    files = (context.write_json("tour", "tour.json", payload),)
    return StepResult(
        name="tour",
        title="Mechanisms, each checked against its reference",
        headline=f"every exact path agrees with the math reference to {worst:.1e}"
        + (
            f"; linear attention, an approximation, is {linear.max_abs_error:.2f} off"
            if linear is not None and linear.max_abs_error is not None
            else ""
        ),
        figures={"max exact error": worst},
        notes=tuple(notes),
        table=Table(("mechanism", "what", "max |error| vs reference", "ms"), rows, timing=("ms",)),
        files=files,
        data=steps,
    )
