"""The GPU twin of ``flash_stats.cpp``: flash attention with streamed statistics, in Triton.

One program handles ``BLOCK_M`` queries of one head and walks the key blocks once (Dao et al.
2022), keeping per query the running maximum score ``m``, ``l = Σ exp(s - m)``,
``t = Σ exp(s - m)·(s - m)``, the largest score and its key, and ``Σ exp(s - m)`` over each key
span. Matrix products run in full fp32 precision for fp32 inputs (no TF32), so the numbers match
the eager reference; for bf16/fp16 inputs, ``P`` is rounded to the values' dtype for ``P·V`` (as
in FlashAttention) and every statistic is accumulated in fp32.
Imported only when statistics are asked for on a CUDA device and Triton is installed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["flash_stats"]

# (BLOCK_M, BLOCK_N, warps, stages) for fp32 and for half-precision inputs, measured best of a
# few on an H100 (64/128 × 64/128 blocks, 4/8 warps, 2/3 stages)
_CONFIG = {False: (64, 64, 4, 2), True: (64, 64, 4, 3)}


@triton.jit
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
    head_dim,
    value_dim,
    scale,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    SPANS: tl.constexpr,
    NUM_SPANS: tl.constexpr,
):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    hkv = h // group
    rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    vdims = tl.arange(0, BLOCK_DV)
    row_ok = rows < num_queries
    q = tl.load(
        q_ptr + b * sqb + h * sqh + rows[:, None] * sqm + dims[None, :] * sqd,
        mask=row_ok[:, None] & (dims[None, :] < head_dim),
        other=0.0,
    )
    span_ids = tl.arange(0, SPANS)
    span_lo = tl.load(span_ptr + 2 * span_ids, mask=span_ids < NUM_SPANS, other=0)
    span_hi = tl.load(span_ptr + 2 * span_ids + 1, mask=span_ids < NUM_SPANS, other=0)

    neg_inf = float("-inf")
    run_max = tl.full([BLOCK_M], neg_inf, tl.float32)
    run_sum = tl.zeros([BLOCK_M], tl.float32)
    run_t = tl.zeros([BLOCK_M], tl.float32)
    top = tl.full([BLOCK_M], neg_inf, tl.float32)
    top_index = tl.zeros([BLOCK_M], tl.int64)
    masses = tl.zeros([BLOCK_M, SPANS], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    offset = num_keys - num_queries  # query i sits at key position offset + i
    key_end = num_keys
    if CAUSAL:
        key_end = tl.minimum(num_keys, offset + (start_m + 1) * BLOCK_M)
    for start_n in range(0, key_end, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        col_ok = cols < num_keys
        k = tl.load(
            k_ptr + b * skb + hkv * skh + cols[None, :] * skn + dims[:, None] * skd,
            mask=col_ok[None, :] & (dims[:, None] < head_dim),
            other=0.0,
        )  # (D, N)
        s = tl.dot(q, k, input_precision=PRECISION) * scale  # (M, N)
        allowed = row_ok[:, None] & col_ok[None, :]
        if CAUSAL:
            allowed = allowed & (cols[None, :] <= offset + rows[:, None])
        if HAS_MASK:
            m = tl.load(
                mask_ptr + b * smb + h * smh + rows[:, None] * smm + cols[None, :] * smn,
                mask=row_ok[:, None] & col_ok[None, :],
                other=0,
            )
            allowed = allowed & (m != 0)
        s = tl.where(allowed, s, neg_inf)

        tile_max = tl.max(s, 1)
        tile_arg = tl.argmax(s, 1).to(tl.int64) + start_n
        better = tile_max > top
        top = tl.where(better, tile_max, top)
        top_index = tl.where(better, tile_arg, top_index)

        new_max = tl.maximum(run_max, tile_max)
        safe_max = tl.where(new_max == neg_inf, 0.0, new_max)
        alpha = tl.exp(run_max - safe_max)  # 0 while nothing was allowed
        x = s - safe_max[:, None]
        p = tl.exp(x)  # 0 where not allowed
        t = tl.sum(tl.where(p > 0, p * x, 0.0), 1)
        carried = tl.where(run_sum > 0, run_t + run_sum * (run_max - safe_max), 0.0)
        run_t = alpha * carried + t
        run_sum = alpha * run_sum + tl.sum(p, 1)
        run_max = new_max

        masses = masses * alpha[:, None]
        if PRECISION == "ieee":  # fp32: one product with the span indicators, in full precision
            inside = (cols[:, None] >= span_lo[None, :]) & (cols[:, None] < span_hi[None, :])
            masses += tl.dot(p, inside.to(tl.float32), input_precision="ieee")
        else:  # half inputs: a masked row sum per span keeps the products on tensor cores
            for n in tl.static_range(NUM_SPANS):
                lo, hi = tl.load(span_ptr + 2 * n), tl.load(span_ptr + 2 * n + 1)
                inside = (cols >= lo) & (cols < hi)
                part = tl.sum(tl.where(inside[None, :], p, 0.0), 1)
                masses = tl.where(span_ids[None, :] == n, masses + part[:, None], masses)
        v = tl.load(
            v_ptr + b * svb + hkv * svh + cols[:, None] * svn + vdims[None, :] * svd,
            mask=col_ok[:, None] & (vdims[None, :] < value_dim),
            other=0.0,
        )
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)

    has_key = run_sum > 0
    inverse = tl.where(has_key, 1.0 / tl.where(has_key, run_sum, 1.0), 0.0)
    log_sum = tl.log(tl.where(has_key, run_sum, 1.0))
    out = acc * inverse[:, None]
    tl.store(
        out_ptr + b * sob + h * soh + rows[:, None] * som + vdims[None, :] * sod,
        out.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None] & (vdims[None, :] < value_dim),
    )
    at = bh * num_queries + rows
    tl.store(lse_ptr + at, tl.where(has_key, run_max + log_sum, float("inf")), mask=row_ok)
    tl.store(entropy_ptr + at, tl.where(has_key, log_sum - run_t * inverse, 0.0), mask=row_ok)
    tl.store(best_ptr + at, top, mask=row_ok)
    tl.store(index_ptr + at, top_index, mask=row_ok)
    plane = tl.num_programs(1) * num_queries
    tl.store(
        mass_ptr + span_ids[None, :] * plane + at[:, None],
        masses * inverse[:, None],
        mask=row_ok[:, None] & (span_ids[None, :] < NUM_SPANS),
    )


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
    """:func:`attnkit.capture.kernel.flash_stats` on a CUDA device (same arguments and results;
    the statistics are float32; ``want_argmax`` is free here and always computed)."""
    batch, heads, num_queries, head_dim = query.shape
    kv_heads, num_keys, value_dim = key.shape[1], key.shape[2], value.shape[3]
    device = query.device
    out = torch.empty(batch, heads, num_queries, value_dim, device=device, dtype=query.dtype)
    stat = torch.empty(5, batch, heads, num_queries, device=device, dtype=torch.float32)
    lse, entropy, best = stat[0], stat[1], stat[2]
    best_index = torch.empty(batch, heads, num_queries, device=device, dtype=torch.int64)
    masses = torch.empty(max(len(spans), 1), batch, heads, num_queries, device=device)
    bounds = torch.tensor([x for span in spans for x in span] or [0, 0], device=device)
    if mask is not None:
        mask = mask.expand(batch, heads, num_queries, num_keys)
        mask_strides = mask.stride()
    else:
        mask_strides = (0, 0, 0, 0)
    half = query.dtype != torch.float32
    block_m, block_n, warps, stages = _CONFIG[half]
    grid = (triton.cdiv(num_queries, block_m), batch * heads)
    _flash_stats_kernel[grid](
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
        masses,
        *query.stride(),
        *key.stride(),
        *value.stride(),
        *mask_strides,
        *out.stride(),
        heads,
        heads // kv_heads,
        num_queries,
        num_keys,
        head_dim,
        value_dim,
        float(scale),
        CAUSAL=causal,
        HAS_MASK=mask is not None,
        PRECISION="ieee" if query.dtype == torch.float32 else "tf32",
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        BLOCK_DV=max(16, triton.next_power_of_2(value_dim)),
        SPANS=max(16, triton.next_power_of_2(len(spans))),  # tl.dot needs 16 columns
        NUM_SPANS=len(spans),
        num_warps=warps,
        num_stages=stages,
    )
    return out, lse, entropy, best, best_index, masses[: len(spans)]
