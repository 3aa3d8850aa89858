"""The fused kernels behind streamed statistics: C++ on the CPU, Triton on CUDA devices.

One flash-attention pass gives the output, the score log-sum-exp, the entropy, the largest score
and its key, and the mass of each key span, with one tile of memory per thread or program. On
CUDA devices the kernel is :mod:`attnkit.recording.triton_stats` (needs ``triton``). The CPU
kernel (``flash_stats.cpp``) is compiled with the system's C++ compiler through
:func:`torch.utils.cpp_extension.load` the first time statistics are asked for on the CPU
(10 to 30 seconds, cached afterwards under
``TORCH_EXTENSIONS_DIR``). Where it cannot be built (no compiler, a BLAS without ``sgemm_``) or
``ATTNKIT_NO_KERNEL=1`` is set, :mod:`attnkit.recording.stats` falls back to PyTorch's fused
kernels plus a tiled pass: the same numbers, more slowly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["flash_stats", "is_available"]

_log = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("flash_stats.cpp")
_loaded: bool | None = None
_cpu = None  # the compiled CPU kernel's Python module, once loaded


def is_available(device: torch.device | str = "cpu") -> bool:
    """Whether a kernel runs on ``device`` (builds the CPU kernel on the first call)."""
    global _loaded
    if os.environ.get("ATTNKIT_NO_KERNEL") == "1":
        return False
    if device == "cpu" and _loaded is not None:  # the common question, asked on every call
        return _loaded
    if torch.device(device).type == "cuda":
        return importlib.util.find_spec("triton") is not None
    if torch.device(device).type != "cpu":
        return False
    if _loaded is None:
        _loaded = _load()
    return _loaded


def _load() -> bool:
    global _cpu
    from torch.utils.cpp_extension import load

    _log.warning("attnkit: loading the CPU statistics kernel (compiled the first time: 10 to 30 s)")
    # one build folder per version of the source: processes running different versions (two
    # checkouts, an upgrade) never rebuild over each other's library
    digest = hashlib.sha1(_SOURCE.read_bytes()).hexdigest()[:12]
    try:
        _cpu = load(
            name=f"attnkit_flash_stats_{digest}",
            sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
        )
    except Exception as error:  # a missing compiler or BLAS symbol: fall back, say why once
        _log.warning("attnkit: CPU statistics kernel unavailable, using the fallback: %s", error)
        return False
    return True


def flash_stats(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    causal: bool,
    scale: float,
    spans: list[tuple[int, int]],
    want_argmax: bool,
    softcap: float | None = None,
    example_spans: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """Run the kernel: float32 CPU tensors, or float32/float16/bfloat16 CUDA tensors.

    Args:
        query: ``(B, H, Q, D)``.
        key: ``(B, Hkv, K, D)``, ``H`` a multiple of ``Hkv``.
        value: ``(B, Hkv, K, Dv)``.
        mask: boolean ``(B|1, H|1, Q|1, K)``, ``True`` = may attend, or ``None``.
        causal: bottom-right causal masking.
        scale: score scale.
        spans: key ranges ``[(start, stop), ...]`` whose weight mass to sum.
        want_argmax: track the key of the largest score (else only the score).
        softcap: logit soft-cap ``c``: scores are ``c · tanh(scale · q·k / c)`` before the mask
            (Gemma 2's ``attn_logit_softcapping``); ``None`` for plain scaled scores.
        example_spans: ``(S, B, 2)`` int64 CPU tensor, each example's own key ranges (a
            left-padded batch), used instead of ``spans``; the CPU kernel only.

    Returns:
        ``(output (B, H, Q, Dv), lse, entropy, largest weight, its key (int64), masses)``, each
        statistic ``(B, H, Q)`` and ``masses`` a list of one per span; a query with no allowed
        key gets zeros and ``lse = inf``. On CUDA the statistics
        are float32 whatever the inputs' dtype.
    """
    if query.is_cuda:
        if example_spans is not None:
            raise ValueError("example_spans: per-example spans are read by the CPU kernel only")
        from attnkit.recording.triton_stats import flash_stats as on_gpu

        extra = {} if softcap is None else {"softcap": softcap}  # only where used: kernels
        # without the keyword still run
        out, lse, entropy, best, index, masses = on_gpu(
            query, key, value, mask, causal, scale, spans, want_argmax, **extra
        )
        largest = torch.exp(best - lse)
        return out, lse, entropy, largest, index, list(masses.unbind(0))
    flat = [int(x) for span in spans for x in span]
    cap = None if softcap is None else float(softcap)
    return _cpu.flash_stats(
        query, key, value, mask, causal, float(scale), flat, want_argmax, cap, example_spans
    )
