"""Attention flow (Abnar & Zuidema 2020): attention as capacities, importance as max-flow.

The layers form a graph: node ``(l, i)`` is token ``i`` after layer ``l`` (``l = 0`` the input),
and an edge from ``(l - 1, j)`` to ``(l, i)`` has capacity ``Â_l[i, j]``, the residual-augmented
attention ``norm(A + I)`` with heads fused. The flow from input token ``j`` to output token ``i``
is the maximum flow from ``(0, j)`` to ``(L, i)``; each output token's flows are normalized to
sum to one. Unlike rollout, which multiplies weights along paths, flow is limited by the narrowest
cut, so it is less dominated by a few large products.

Max-flow is exact on integer capacities: weights are scaled by 2^24, so each capacity is exact to
``6e-8``. All ``N`` by ``T`` pairs are solved by a small Dinic solver in C
(``layered_maxflow.c``), compiled with the system's C compiler on first use (under a second) and
cached; it builds the residual graph once and restores only what each solve changed, and stops a
solve when it reaches the bound min(out-capacity of the source, in-capacity of the sink), which the
first, search-free phase nearly always does: the full 128 × 128 matrix over 6 layers takes about
2 s on two CPU cores (``benchmarks/interpret_speed.py``). Without a compiler, or with
``ATTNKIT_NO_KERNEL=1``, each pair is one call of scipy's Dinic solver: the same numbers, 30 to 40
times more slowly (about a minute for that matrix).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnkit.interpret.attention_rollout import fuse_heads

__all__ = ["RESOLUTION_BITS", "flow"]

RESOLUTION_BITS = 24  # capacities are rounded to multiples of 2^-24

_log = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("layered_maxflow.c")
_solver: ctypes.CDLL | bool | None = False  # False: not tried yet; None: unavailable


def _capacities(layers: list[Tensor], example: int, head_fusion: str) -> np.ndarray:
    """``(L, N, N)`` int32 capacities of one example: ``[l, i, j]`` for ``(l, j) -> (l + 1, i)``."""
    n = layers[0].shape[-1]
    caps = []
    for layer in layers:
        fused = fuse_heads(layer[example : example + 1].double(), head_fusion)[0]
        fused = fused + torch.eye(n, dtype=fused.dtype, device=fused.device)
        mixing = (fused / fused.sum(-1, keepdim=True)).cpu().numpy()
        caps.append(np.rint(mixing * 2**RESOLUTION_BITS).astype(np.int32))
    return np.ascontiguousarray(np.stack(caps))


def _compiled() -> ctypes.CDLL | None:
    """The C solver, compiled once per source version into the user's cache; None without one."""
    global _solver
    if _solver is not False:
        return _solver
    _solver = None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if os.environ.get("ATTNKIT_NO_KERNEL") == "1" or compiler is None or not _SOURCE.is_file():
        return None
    source = _SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "attnkit"
    library = cache / f"layered_maxflow-{hashlib.sha256(source).hexdigest()[:16]}.so"
    try:
        if not library.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as work:  # then an atomic rename
                built = Path(work) / library.name
                subprocess.run(
                    [compiler, "-O2", "-shared", "-fPIC", str(_SOURCE), "-o", str(built)],
                    check=True, capture_output=True, timeout=120,
                )  # fmt: skip
                os.replace(built, library)
        lib = ctypes.CDLL(str(library))
    except (OSError, subprocess.SubprocessError) as error:
        _log.warning("attnkit: C max-flow solver unavailable, using scipy (slower): %s", error)
        return None
    lib.attnkit_layered_maxflow.restype = ctypes.c_int
    lib.attnkit_layered_maxflow.argtypes = [
        ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    _solver = lib
    return lib


def _solve_c(lib: ctypes.CDLL, caps: np.ndarray, targets: list[int]) -> np.ndarray:
    layers, n, _ = caps.shape
    wanted = np.asarray(targets, dtype=np.int32)
    out = np.zeros((len(targets), n), dtype=np.int64)  # (T, N)
    pointer = ctypes.c_void_p
    status = lib.attnkit_layered_maxflow(
        n, layers, caps.ctypes.data_as(pointer), len(targets), wanted.ctypes.data_as(pointer),
        out.ctypes.data_as(pointer),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("attention flow: the C max-flow solver ran out of memory")
    return out


def _solve_scipy(caps: np.ndarray, targets: list[int]) -> np.ndarray:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    layers, n, _ = caps.shape
    level, target, source = np.nonzero(caps)  # (l, i, j): (l, j) -> (l + 1, i)
    size = (layers + 1) * n
    graph = csr_matrix(
        (caps[level, target, source], (level * n + source, (level + 1) * n + target)),
        shape=(size, size),
    )
    out = np.zeros((len(targets), n), dtype=np.int64)  # (T, N)
    for row, sink in enumerate(targets):
        for j in range(n):
            out[row, j] = maximum_flow(graph, j, layers * n + sink, method="dinic").flow_value
    return out


def flow(
    weights: Sequence[Tensor] | Mapping[str, Tensor],
    head_fusion: str = "mean",
    targets: Sequence[int] | None = None,
) -> Tensor:
    """Attention flow from every input token to each output token in ``targets``.

    Args:
        weights: ``(B, H, N, N)`` self-attention weights per layer, in forward order.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        targets: output token indices (default all ``N``).

    Returns:
        ``(B, T, N)``: row ``t`` is how input tokens flow into output token ``targets[t]``,
        normalized to sum to one.
    """
    layers = list(weights.values()) if isinstance(weights, Mapping) else list(weights)
    if not layers:
        raise ValueError("weights must hold at least one layer")
    batch, _, n, _ = layers[0].shape
    if any(layer.shape != layers[0].shape or layer.shape[-1] != n for layer in layers):
        raise ValueError("every layer must be self-attention weights (B, H, N, N) of one shape")
    targets = list(range(n)) if targets is None else [int(t) for t in targets]
    if not all(0 <= t < n for t in targets):
        raise ValueError(f"targets must be token indices in [0, {n}), got {targets}")
    lib = _compiled()
    result = torch.zeros(batch, len(targets), n, dtype=torch.float64)
    for b in range(batch):
        caps = _capacities(layers, b, head_fusion)
        values = _solve_c(lib, caps, targets) if lib is not None else _solve_scipy(caps, targets)
        result[b] = torch.from_numpy(values / 2**RESOLUTION_BITS)
    total = result.sum(-1, keepdim=True)
    return (result / total.clamp_min(1e-30)).to(layers[0].dtype)
