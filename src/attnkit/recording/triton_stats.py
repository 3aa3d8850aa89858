"""The GPU twin of ``flash_stats.cpp``: flash attention with streamed statistics, in Triton.

One program handles ``BLOCK_M`` queries of one head and walks the key blocks once (Dao et al.
2022, "FlashAttention"; the loop split and the base-2 exponentials of Dao 2023,
"FlashAttention-2"), keeping per query the running maximum score ``m``, ``l = Σ 2^(s - m)``,
``t = Σ 2^(s - m)·(s - m)`` (scores in log2 units), the key of the largest score, and
``Σ 2^(s - m)`` over each key span. At the end ``lse = (m + log2 l)·ln 2`` and the entropy is
``ln l - ln 2 · t / l`` nats.

Speed (bf16/fp16 inputs):

- the key loop is split in two: the blocks every query of the program may fully see (no bounds,
  no causal mask, no ``-inf`` guards: the plain FlashAttention loop plus one product and one row
  sum for the entropy), then the few blocks across the causal diagonal or the end of the keys;
  causal programs stop at their diagonal and the longest programs are launched first;
- ``Q·Kᵀ`` and ``P·V`` run on tensor cores in the inputs' dtype with fp32 accumulation (``P``
  rounded to the values' dtype, as in FlashAttention), every statistic is accumulated in fp32;
- a span's mass costs nothing on the blocks it does not touch, a row sum already computed on
  the blocks it covers, and a masked row sum only on (at most two) blocks it cuts;
- the key of the largest score is tracked only when asked for (``want_argmax``), and the largest
  score itself is the running maximum (no second reduction);
- block sizes, warps and pipeline stages are autotuned (``triton.autotune``) per head size,
  dtype, masking and length bucket (a power of two), so lengths from 2k to 16k tokens each get a
  measured configuration without retuning for every length; shorter calls use one fixed
  configuration (tuning them would cost more than it saves).

For fp32 inputs the products run in full fp32 precision (no TF32), so the numbers match the
eager reference. Softcapping (Gemma 2, Team Gemma 2024): scores ``c·tanh(scale·q·k / c)``.
Imported only when statistics are asked for on a CUDA device and Triton is installed; with
``TRITON_INTERPRET=1`` it runs on CPU tensors through Triton's interpreter (tests without a GPU).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["flash_stats"]

# (BLOCK_M, BLOCK_N, warps, stages): candidates measured by the autotuner on the first call of
# each (head size, dtype, masking, length bucket); 128×64 with 8 warps is FlashAttention-2's
# choice on Hopper for both head sizes.
_CANDIDATES = [
    (128, 64, 8, 3),
    (128, 128, 8, 3),
    (128, 64, 4, 3),
    (128, 64, 8, 4),
    (128, 32, 4, 3),
    (64, 64, 4, 3),
]
# below this many keys or queries (rounded up to a power of two) one fixed configuration is used:
# tuning a call that short would cost more than it saves; (BLOCK_M, BLOCK_N, warps, stages) for
# half-precision and for fp32 inputs
TUNE_FROM = 2048
_FIXED = {True: (128, 64, 8, 3), False: (64, 32, 8, 2)}
# fp32 products run on CUDA cores (no TF32) with both operands in registers: smaller tiles, or
# ptxas spills tens of kilobytes (64×64 with 4 warps: 40-60 KB at head size 64-128; 64×32 with 8
# warps: none at 64, 1.6 KB at 128; Triton 3.6, sm_90)
_CANDIDATES_FP32 = [(64, 32, 8, 2), (32, 32, 4, 2), (64, 32, 4, 2)]
# the one configuration used under TRITON_INTERPRET=1 (no autotuning there); tests change it
INTERPRET_CONFIG = (32, 16, 4, 1)


@triton.jit
def _tile(
    acc,
    run_max,
    run_sum,
    run_t,
    masses,
    best_key,
    q,
    k_base,
    v_base,
    mask_base,
    span_ptr,
    start_n,
    rows,
    row_ok,
    offset,
    num_keys,
    skn,
    skd,
    svn,
    svd,
    smm,
    smn,
    qk_scale,
    cap,
    dims,
    vdims,
    span_ids,
    head_dim,
    value_dim,
    EDGE: tl.constexpr,
    GUARDED: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    SOFTCAP: tl.constexpr,
    WANT_ARGMAX: tl.constexpr,
    PAD_D: tl.constexpr,
    PAD_DV: tl.constexpr,
    NUM_SPANS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One key block ``[start_n, start_n + BLOCK_N)``; ``EDGE``: it may hold keys past the
    end or in a query's causal future (bounds and masks checked); ``GUARDED``: some scores may
    be ``-inf`` (an edge block or a mask)."""
    cols = start_n + tl.arange(0, BLOCK_N)
    col_ok = cols < num_keys
    # pointers made afresh from the scalar bases on every block: a loop-carried tile of 64-bit
    # pointers would hold registers that the score and output tiles need
    k_ptrs = k_base + cols[:, None] * skn + dims[None, :] * skd  # (N, D)
    if EDGE:
        k_mask = col_ok[:, None]
        if PAD_D:
            k_mask = k_mask & (dims[None, :] < head_dim)
        k = tl.load(k_ptrs, mask=k_mask, other=0.0)
    elif PAD_D:
        k = tl.load(k_ptrs, mask=dims[None, :] < head_dim, other=0.0)
    else:
        k = tl.load(k_ptrs)
    qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (M, N), fp32
    # scores in log2 units are qk·mult: scaled in the max and the exponent's FMA only
    if SOFTCAP:  # s = c·tanh(scale·qk / c) = c·(1 - 2 / (exp(2·scale·qk / c) + 1))
        qk = cap * (1.0 - 2.0 / (tl.exp2(qk * qk_scale) + 1.0))
        mult = 1.0
    else:
        mult = qk_scale
    if GUARDED:
        allowed = col_ok[None, :] & row_ok[:, None]
        if CAUSAL:
            allowed = allowed & (cols[None, :] <= offset + rows[:, None])
        if HAS_MASK:
            mask_ptrs = mask_base + rows[:, None] * smm + cols[None, :] * smn
            m = tl.load(mask_ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0)
            allowed = allowed & (m != 0)
        qk = tl.where(allowed, qk, float("-inf"))
    tile_max = tl.max(qk, 1) * mult  # mult > 0: the largest qk is the largest score
    if WANT_ARGMAX:
        tile_arg = tl.argmax(qk, 1).to(tl.int64) + start_n
        best_key = tl.where(tile_max > run_max, tile_arg, best_key)
    new_max = tl.maximum(run_max, tile_max)
    if GUARDED:  # a row with nothing allowed yet keeps m = -inf: subtract 0 instead
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        x = qk * mult - safe_max[:, None]
        p = tl.exp2(x)  # 0 where not allowed
        t = tl.sum(tl.where(p > 0.0, p * x, 0.0), 1)
        carried = tl.where(run_sum > 0.0, run_t + run_sum * (run_max - safe_max), 0.0)
    else:  # every score is finite and new_max too
        safe_max = new_max
        x = qk * mult - new_max[:, None]
        p = tl.exp2(x)
        t = tl.sum(p * x, 1)
        carried = run_t + run_sum * (run_max - new_max)  # run_sum = 0 while run_max = -inf
        carried = tl.where(run_sum > 0.0, carried, 0.0)
    alpha = tl.exp2(run_max - safe_max)  # 0 while nothing was allowed
    tile_sum = tl.sum(p, 1)
    run_t = alpha * carried + t
    run_sum = alpha * run_sum + tile_sum
    if NUM_SPANS > 0:
        masses = masses * alpha[:, None]
        for n in tl.static_range(NUM_SPANS):
            lo = tl.load(span_ptr + 2 * n)
            hi = tl.load(span_ptr + 2 * n + 1)
            if (lo <= start_n) & (hi >= start_n + BLOCK_N):  # the span covers the block
                masses = tl.where(span_ids[None, :] == n, masses + tile_sum[:, None], masses)
            elif (lo < start_n + BLOCK_N) & (hi > start_n):  # the span cuts the block
                inside = (cols >= lo) & (cols < hi)
                part = tl.sum(tl.where(inside[None, :], p, 0.0), 1)
                masses = tl.where(span_ids[None, :] == n, masses + part[:, None], masses)
    v_ptrs = v_base + cols[:, None] * svn + vdims[None, :] * svd  # (N, Dv)
    if EDGE:
        v_mask = col_ok[:, None]
        if PAD_DV:
            v_mask = v_mask & (vdims[None, :] < value_dim)
        v = tl.load(v_ptrs, mask=v_mask, other=0.0)
    elif PAD_DV:
        v = tl.load(v_ptrs, mask=vdims[None, :] < value_dim, other=0.0)
    else:
        v = tl.load(v_ptrs)
    # rescaled, then accumulated by the tensor cores in place
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
    return acc, new_max, run_sum, run_t, masses, best_key


@triton.jit(do_not_specialize=["num_queries", "num_keys", "size_bucket"])
def _flash_stats_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    mask_ptr,
    span_ptr,
    out_ptr,
    lse_ptr,
    entropy_ptr,
    best_ptr,
    index_ptr,
    mass_ptr,
    sqb,
    sqh,
    sqm,
    sqd,
    skb,
    skh,
    skn,
    skd,
    svb,
    svh,
    svn,
    svd,
    smb,
    smh,
    smm,
    smn,
    sob,
    soh,
    som,
    sod,
    heads,
    group,
    num_queries,
    num_keys,
    size_bucket,  # only an autotuning key: a power of two of the length
    scale,
    softcap,
    HEAD_DIM: tl.constexpr,
    VALUE_DIM: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    SOFTCAP: tl.constexpr,
    WANT_ARGMAX: tl.constexpr,
    PRECISION: tl.constexpr,
    SPANS: tl.constexpr,
    NUM_SPANS: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    PAD_D: tl.constexpr,
    PAD_DV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # the longest (causal) programs first: the grid's tail is then made of short ones
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    hkv = h // group
    rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    vdims = tl.arange(0, BLOCK_DV)
    row_ok = rows < num_queries
    q_mask = row_ok[:, None]
    if PAD_D:
        q_mask = q_mask & (dims[None, :] < HEAD_DIM)
    b64, h64, hkv64 = b.to(tl.int64), h.to(tl.int64), hkv.to(tl.int64)  # no int32 overflow
    q = tl.load(
        q_ptr + b64 * sqb + h64 * sqh + rows[:, None] * sqm + dims[None, :] * sqd,
        mask=q_mask,
        other=0.0,
    )
    k_base = k_ptr + b64 * skb + hkv64 * skh
    v_base = v_ptr + b64 * svb + hkv64 * svh
    mask_base = mask_ptr + b64 * smb + h64 * smh
    span_ids = tl.arange(0, SPANS)
    if SOFTCAP:  # exp2(qk · qk_scale) = exp(2·scale·qk / c); cap in log2 units
        qk_scale = 2.0 * 1.4426950408889634 * scale / softcap
        cap = softcap * 1.4426950408889634
    else:
        qk_scale = scale * 1.4426950408889634
        cap = 1.0

    run_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_M], tl.float32)
    run_t = tl.zeros([BLOCK_M], tl.float32)
    best_key = tl.zeros([BLOCK_M], tl.int64)
    masses = tl.zeros([BLOCK_M, SPANS], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    offset = num_keys - num_queries  # query i sits at key position offset + i
    if CAUSAL:
        # keys every query of the program may see: [0, offset + first row]; beyond, up to the
        # last row's diagonal, the edge blocks
        seen_by_all = tl.minimum(tl.maximum(offset + start_m * BLOCK_M + 1, 0), num_keys)
        key_end = tl.minimum(tl.maximum(offset + (start_m + 1) * BLOCK_M, 0), num_keys)
    else:
        seen_by_all = num_keys
        key_end = num_keys
    full_end = (seen_by_all // BLOCK_N) * BLOCK_N
    for start_n in range(0, full_end, BLOCK_N):
        acc, run_max, run_sum, run_t, masses, best_key = _tile(
            acc, run_max, run_sum, run_t, masses, best_key, q, k_base, v_base, mask_base,
            span_ptr, start_n, rows, row_ok, offset, num_keys, skn, skd, svn, svd, smm, smn,
            qk_scale, cap,
            dims, vdims, span_ids, HEAD_DIM, VALUE_DIM,
            False, HAS_MASK, CAUSAL, HAS_MASK, SOFTCAP, WANT_ARGMAX, PAD_D, PAD_DV, NUM_SPANS,
            BLOCK_N, PRECISION,
        )  # fmt: skip
    for start_n in range(full_end, key_end, BLOCK_N):
        acc, run_max, run_sum, run_t, masses, best_key = _tile(
            acc, run_max, run_sum, run_t, masses, best_key, q, k_base, v_base, mask_base,
            span_ptr, start_n, rows, row_ok, offset, num_keys, skn, skd, svn, svd, smm, smn,
            qk_scale, cap,
            dims, vdims, span_ids, HEAD_DIM, VALUE_DIM,
            True, True, CAUSAL, HAS_MASK, SOFTCAP, WANT_ARGMAX, PAD_D, PAD_DV, NUM_SPANS,
            BLOCK_N, PRECISION,
        )  # fmt: skip

    has_key = run_sum > 0.0
    inverse = tl.where(has_key, 1.0 / tl.where(has_key, run_sum, 1.0), 0.0)
    log2_sum = tl.log2(tl.where(has_key, run_sum, 1.0))
    out = acc * inverse[:, None]
    o_mask = row_ok[:, None]
    if PAD_DV:
        o_mask = o_mask & (vdims[None, :] < VALUE_DIM)
    tl.store(
        out_ptr + b64 * sob + h64 * soh + rows[:, None] * som + vdims[None, :] * sod,
        out.to(out_ptr.dtype.element_ty),
        mask=o_mask,
    )
    ln2 = 0.6931471805599453
    at = bh * num_queries + rows
    tl.store(lse_ptr + at, tl.where(has_key, (run_max + log2_sum) * ln2, float("inf")), mask=row_ok)
    entropy = tl.where(has_key, (log2_sum - run_t * inverse) * ln2, 0.0)
    tl.store(entropy_ptr + at, entropy, mask=row_ok)
    tl.store(best_ptr + at, run_max * ln2, mask=row_ok)  # the largest score, in nats
    if WANT_ARGMAX:
        tl.store(index_ptr + at, best_key, mask=row_ok)
    if NUM_SPANS > 0:
        plane = tl.num_programs(1) * num_queries
        tl.store(
            mass_ptr + span_ids[None, :] * plane + at[:, None],
            masses * inverse[:, None],
            mask=row_ok[:, None] & (span_ids[None, :] < NUM_SPANS),
        )


def _config(m: int, n: int, w: int, s: int) -> triton.Config:
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)


def _configs() -> list[triton.Config]:
    return [_config(*c) for c in _CANDIDATES + _CANDIDATES_FP32]


def _prune(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list:
    """The half-precision candidates for half inputs, the fp32 ones for fp32 inputs."""
    wanted = _CANDIDATES_FP32 if named_args["q_ptr"].dtype == torch.float32 else _CANDIDATES
    keys = {(m, n, w, s) for m, n, w, s in wanted}
    kept = [
        c
        for c in configs
        if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in keys
    ]
    return kept or configs


_tuned_kernel = triton.autotune(
    configs=_configs(),
    key=["size_bucket", "HEAD_DIM", "VALUE_DIM", "CAUSAL", "HAS_MASK", "SOFTCAP", "WANT_ARGMAX"],
    prune_configs_by={"early_config_prune": _prune},
)(_flash_stats_kernel)


@functools.lru_cache(maxsize=256)
def _bounds(flat: tuple[int, ...], device: torch.device) -> Tensor:
    """The spans as an int64 tensor on ``device``, made once: a host-to-device copy of a fresh
    list waits for the device, which would stall the launches of a capture or a generation."""
    return torch.tensor(flat or (0, 0), device=device, dtype=torch.int64)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`attnkit.recording.kernel.flash_stats` on a CUDA device.

    Args:
        query: ``(B, H, Q, D)``, float32, float16 or bfloat16.
        key: ``(B, Hkv, K, D)``, ``H`` a multiple of ``Hkv``, the query's dtype.
        value: ``(B, Hkv, K, Dv)``, the query's dtype.
        mask: boolean ``(B|1, H|1, Q|1, K)``, ``True`` = may attend, or ``None``.
        causal: bottom-right causal masking.
        scale: score scale.
        spans: key ranges ``[(start, stop), ...]`` whose weight mass to sum.
        want_argmax: track the key of the largest score (else the returned keys are zeros).
        softcap: ``c`` for scores ``c·tanh(scale·q·k / c)`` before masking (Gemma 2), or
            ``None``.

    Returns:
        ``(output (B, H, Q, Dv) in the query's dtype, lse, entropy, largest score, its key
        (int64), masses (S, B, H, Q))``, statistics float32; a query with no allowed key gets
        zeros, ``lse = inf`` and largest score ``-inf``.
    """
    if softcap is not None and not (isinstance(softcap, int | float) and softcap > 0):
        raise ValueError(f"softcap must be a positive number or None, got {softcap!r}")
    batch, heads, num_queries, head_dim = query.shape
    kv_heads, num_keys, value_dim = key.shape[1], key.shape[2], value.shape[3]
    device = query.device
    out = torch.empty(batch, heads, num_queries, value_dim, device=device, dtype=query.dtype)
    # one allocation for the float statistics: lse, entropy, largest score, then the masses
    stat = torch.empty(
        3 + len(spans), batch, heads, num_queries, device=device, dtype=torch.float32
    )
    lse, entropy, best, masses = stat[0], stat[1], stat[2], stat[3:]
    best_index = (torch.empty if want_argmax else torch.zeros)(
        batch, heads, num_queries, device=device, dtype=torch.int64
    )
    # clamp the spans to the keys: "the block is inside the span" must stay a key-range test
    bounds = _bounds(tuple(min(max(int(x), 0), num_keys) for s in spans for x in s), device)
    if mask is not None:
        mask = mask.expand(batch, heads, num_queries, num_keys)
        mask_strides = mask.stride()
    else:
        mask_strides = (0, 0, 0, 0)
    size_bucket = triton.next_power_of_2(max(num_queries, num_keys, 16))
    arguments = [
        query,
        key,
        value,
        mask if mask is not None else query,
        bounds,
        out,
        lse,
        entropy,
        best,
        best_index,
        masses if spans else stat,
        *query.stride(),
        *key.stride(),
        *value.stride(),
        *mask_strides,
        *out.stride(),
        heads,
        heads // kv_heads,
        num_queries,
        num_keys,
        size_bucket,
        float(scale),
        float(softcap) if softcap is not None else 1.0,
    ]
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_dv = max(16, triton.next_power_of_2(value_dim))
    constants = dict(
        HEAD_DIM=head_dim,
        VALUE_DIM=value_dim,
        BLOCK_D=block_d,
        BLOCK_DV=block_dv,
        PAD_D=block_d != head_dim,
        PAD_DV=block_dv != value_dim,
        CAUSAL=bool(causal),
        HAS_MASK=mask is not None,
        SOFTCAP=softcap is not None,
        WANT_ARGMAX=bool(want_argmax),
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32",  # tf32: ignored for half
        SPANS=triton.next_power_of_2(max(len(spans), 1)),
        NUM_SPANS=len(spans),
    )
    if _interpreting() or size_bucket < TUNE_FROM:
        half = query.dtype != torch.float32
        block_m, block_n, warps, stages = INTERPRET_CONFIG if _interpreting() else _FIXED[half]
        grid = (triton.cdiv(num_queries, block_m), batch * heads)
        _flash_stats_kernel[grid](
            *arguments,
            **constants,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            num_warps=warps,
            num_stages=stages,
        )
    else:

        def grid(meta: dict) -> tuple[int, int]:
            return (triton.cdiv(num_queries, meta["BLOCK_M"]), batch * heads)

        _tuned_kernel[grid](*arguments, **constants)
    return out, lse, entropy, best, best_index, masses


def chosen_configs() -> dict[str, str]:
    """The configuration the autotuner picked for each key it has seen (for benchmarks)."""
    return {str(key): str(config) for key, config in _tuned_kernel.cache.items()}
