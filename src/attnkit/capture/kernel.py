"""The fused CPU kernel behind streamed statistics (``flash_stats.cpp``), compiled on first use.

One flash-attention pass gives the output, the score log-sum-exp, the entropy, the largest score
and its key, and the mass of each key span, with one ``BQ × BK`` tile of memory per thread. It is
compiled with the system's C++ compiler through :func:`torch.utils.cpp_extension.load` the first
time statistics are asked for on the CPU (about half a minute, cached afterwards under
``TORCH_EXTENSIONS_DIR``). Where it cannot be built (no compiler, a BLAS without ``sgemm_``) or
``ATTNKIT_NO_KERNEL=1`` is set, :mod:`attnkit.capture.stats` falls back to PyTorch's fused
kernels plus a tiled pass: the same numbers, more slowly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["available", "flash_stats"]

_log = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("flash_stats.cpp")
_loaded: bool | None = None


def available() -> bool:
    """Whether the kernel is built and loaded (builds it on the first call)."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def _load() -> bool:
    if os.environ.get("ATTNKIT_NO_KERNEL") == "1":
        return False
    if hasattr(torch.ops.attnkit, "flash_stats"):  # registered by an earlier load
        return True
    from torch.utils.cpp_extension import load

    _log.warning("attnkit: compiling the CPU statistics kernel (once; about 30 s)")
    try:
        load(
            name="attnkit_flash_stats",
            sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run the kernel on float32 CPU tensors.

    Args:
        query: ``(B, H, Q, D)``.
        key: ``(B, Hkv, K, D)``, ``H`` a multiple of ``Hkv``.
        value: ``(B, Hkv, K, Dv)``.
        mask: boolean ``(B|1, H|1, Q|1, K)``, ``True`` = may attend, or ``None``.
        causal: bottom-right causal masking.
        scale: score scale.
        spans: key ranges ``[(start, stop), ...]`` whose weight mass to sum.
        want_argmax: track the key of the largest score (else only the score).

    Returns:
        ``(output (B, H, Q, Dv), lse, entropy, largest score, its key (int64), masses (S, B, H,
        Q))``; a query with no allowed key gets zeros, ``lse = inf`` and largest score ``-inf``.
    """
    flat = [int(x) for span in spans for x in span]
    return torch.ops.attnkit.flash_stats(
        query, key, value, mask, causal, float(scale), flat, want_argmax
    )
