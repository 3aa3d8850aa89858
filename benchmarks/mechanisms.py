"""attnkit's MultiHeadAttention against plain PyTorch, side by side.

For sequence lengths 256..4096 (batch 1, E = 512, 8 heads of 64), forward and forward+backward:

- attnkit ``MultiHeadAttention`` (``need_weights=False``: the fused SDPA backend);
- a plain-PyTorch module written the usual way (one qkv Linear, ``scaled_dot_product_attention``,
  an output Linear), with the same weights;
- ``torch.nn.MultiheadAttention(need_weights=False)``, with the same weights.

The ratio columns are medians of per-round ``reference time / attnkit time`` (interleaved runs):
1.00 means equal, the goal is >= 0.95 (attnkit's overhead <= 5%). Attention GFLOP/s counts
4·B·H·N²·D per forward (x3 for forward+backward) and is set against this machine's fp32 matmul
speed. Peak memory is measured in a child process per configuration (peak RSS over the forward,
no autograd), with ``need_weights=True`` beside it for the cost of materialized weights.

Weights columns (issue 21): attnkit ``need_weights=True`` against
``nn.MultiheadAttention(need_weights=True, average_attn_weights=False)`` on the same weights and
input, forward without autograd, interleaved; the ratio is the median of per-round
``attnkit time / nn.MHA time`` (<= 1.0 is the goal: attnkit no slower), and peak memory of each
in a child process.

    python benchmarks/mechanisms.py [--lengths 256 512 ...] [--repeats 10] [--causal]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from attnkit import MultiHeadAttention
from harness import (
    interleaved,
    machine,
    markdown_table,
    matmul_gflops,
    median_ratio,
    peak_resident_mib,
    resident_mib,
    write_results,
)

EMBED, HEADS = 512, 8


class PlainSDPA(nn.Module):
    """The reference: multi-head self-attention as one writes it by hand with SDPA."""

    def __init__(self, embed_dim: int, num_heads: int, causal: bool) -> None:
        super().__init__()
        self.num_heads, self.causal = num_heads, causal
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, embed = x.shape
        q, k, v = self.qkv(x).split(embed, dim=2)
        q = q.view(batch, length, self.num_heads, -1).transpose(1, 2)  # (B, H, N, D)
        k = k.view(batch, length, self.num_heads, -1).transpose(1, 2)  # (B, H, N, D)
        v = v.view(batch, length, self.num_heads, -1).transpose(1, 2)  # (B, H, N, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(batch, length, embed))


def build(causal: bool) -> tuple[MultiHeadAttention, PlainSDPA, nn.MultiheadAttention]:
    torch.manual_seed(0)
    ours = MultiHeadAttention(EMBED, HEADS, causal=causal)
    plain = PlainSDPA(EMBED, HEADS, causal)
    torch_mha = nn.MultiheadAttention(EMBED, HEADS, batch_first=True)
    with torch.no_grad():
        plain.qkv.weight.copy_(ours.in_proj_weight)
        plain.qkv.bias.copy_(ours.in_proj_bias)
        plain.proj.load_state_dict(ours.out_proj.state_dict())
        torch_mha.in_proj_weight.copy_(ours.in_proj_weight)
        torch_mha.in_proj_bias.copy_(ours.in_proj_bias)
        torch_mha.out_proj.load_state_dict(ours.out_proj.state_dict())
    return ours, plain, torch_mha


def calls(causal: bool, length: int, backward: bool):
    """Three zero-argument callables computing the same thing with each implementation."""
    ours, plain, torch_mha = build(causal)
    x = torch.randn(1, length, EMBED, requires_grad=backward)
    tri = torch.ones(length, length, dtype=torch.bool).triu(1) if causal else None
    forwards = [
        lambda: ours(x).output,
        lambda: plain(x),
        lambda: torch_mha(x, x, x, need_weights=False, attn_mask=tri, is_causal=causal)[0],
    ]
    with torch.no_grad():
        outs = [f() for f in forwards]
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], atol=1e-4, rtol=1e-4)
    if not backward:
        return [_no_grad(f) for f in forwards]
    grad = torch.randn(1, length, EMBED)
    modules = [ours, plain, torch_mha]
    return [_with_backward(f, m, x, grad) for f, m in zip(forwards, modules, strict=True)]


def weight_calls(causal: bool, length: int):
    """attnkit and nn.MultiheadAttention returning per-head weights, checked equal first."""
    ours, _, torch_mha = build(causal)
    x = torch.randn(1, length, EMBED)
    tri = torch.ones(length, length, dtype=torch.bool).triu(1) if causal else None
    forwards = [
        lambda: ours(x, need_weights=True).weights,
        lambda: torch_mha(x, x, x, need_weights=True, average_attn_weights=False, attn_mask=tri)[1],
    ]
    with torch.no_grad():
        torch.testing.assert_close(forwards[0](), forwards[1](), atol=1e-5, rtol=1e-4)
    return [_no_grad(f) for f in forwards]


def _no_grad(fn):
    def run():
        with torch.no_grad():
            fn()

    return run


def _with_backward(fn, module, x, grad):
    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        fn().backward(grad)

    return run


def peak_memory_mib(kind: str, length: int, causal: bool) -> float:
    """Extra peak resident memory of one forward, measured in a fresh child process."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", kind, str(length), str(int(causal))],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def _memory_child(kind: str, length: int, causal: bool) -> None:
    ours, plain, torch_mha = build(causal)

    def run(x: torch.Tensor) -> object:
        n = x.shape[1]
        tri = torch.ones(n, n, dtype=torch.bool).triu(1) if causal else None
        return {
            "attnkit": lambda: ours(x),
            "attnkit_weights": lambda: ours(x, need_weights=True),
            "plain_sdpa": lambda: plain(x),
            "torch_mha": lambda: torch_mha(x, x, x, need_weights=False, attn_mask=tri),
            "torch_mha_weights": lambda: torch_mha(
                x, x, x, need_weights=True, average_attn_weights=False, attn_mask=tri
            ),
        }[kind]()

    x = torch.randn(1, length, EMBED)
    with torch.no_grad():
        run(x[:, :64])  # load the kernels' libraries and thread pools before measuring
        before = resident_mib()
        run(x)
    print(f"{max(peak_resident_mib() - before, 0):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        kind, length, causal = args.memory_child
        _memory_child(kind, int(length), bool(int(causal)))
        return

    peak = matmul_gflops()
    rows, records = [], []
    with Progress(transient=True) as progress:
        task = progress.add_task("measuring", total=len(args.lengths) * 2)
        for length in args.lengths:
            memory = {
                kind: peak_memory_mib(kind, length, args.causal)
                for kind in (
                    "attnkit",
                    "plain_sdpa",
                    "torch_mha",
                    "attnkit_weights",
                    "torch_mha_weights",
                )
            }
            ours_w, mha_w = interleaved(weight_calls(args.causal, length), args.repeats)
            for backward in (False, True):
                ours, plain, torch_mha = interleaved(
                    calls(args.causal, length, backward), args.repeats
                )
                flops = 4 * HEADS * length**2 * (EMBED // HEADS) * (3 if backward else 1)
                if args.causal:
                    flops //= 2
                median = sorted(ours)[len(ours) // 2]
                record = {
                    "length": length,
                    "pass": "fwd+bwd" if backward else "fwd",
                    "attnkit_ms": 1e3 * median,
                    "plain_sdpa_ms": 1e3 * sorted(plain)[len(plain) // 2],
                    "torch_mha_ms": 1e3 * sorted(torch_mha)[len(torch_mha) // 2],
                    "ratio_vs_plain_sdpa": median_ratio(plain, ours),
                    "ratio_vs_torch_mha": median_ratio(torch_mha, ours),
                    "attention_gflops": flops / median / 1e9,
                    "fraction_of_matmul_peak": flops / median / 1e9 / peak,
                    "peak_mib": memory,
                }
                if not backward:
                    record["weights_attnkit_ms"] = 1e3 * sorted(ours_w)[len(ours_w) // 2]
                    record["weights_torch_mha_ms"] = 1e3 * sorted(mha_w)[len(mha_w) // 2]
                    record["weights_ratio_vs_torch_mha"] = median_ratio(ours_w, mha_w)
                records.append(record)
                rows.append(
                    [
                        length,
                        record["pass"],
                        f"{record['attnkit_ms']:.1f}",
                        f"{record['plain_sdpa_ms']:.1f}",
                        f"{record['torch_mha_ms']:.1f}",
                        f"{record['ratio_vs_plain_sdpa']:.3f}",
                        f"{record['ratio_vs_torch_mha']:.3f}",
                        f"{record['attention_gflops']:.1f} "
                        f"({record['fraction_of_matmul_peak']:.0%})",
                        ""
                        if backward
                        else f"{memory['attnkit']:.0f} / {memory['plain_sdpa']:.0f}"
                        f" / {memory['torch_mha']:.0f} / {memory['attnkit_weights']:.0f}",
                        ""
                        if backward
                        else f"{record['weights_attnkit_ms']:.1f} / "
                        f"{record['weights_torch_mha_ms']:.1f}",
                        "" if backward else f"{record['weights_ratio_vs_torch_mha']:.3f}x",
                        ""
                        if backward
                        else f"{memory['attnkit_weights']:.0f} / {memory['torch_mha_weights']:.0f}",
                    ]
                )
                progress.advance(task)

    headers = [
        "N",
        "pass",
        "attnkit ms",
        "plain SDPA ms",
        "nn.MHA ms",
        "ratio vs SDPA",
        "ratio vs nn.MHA",
        "attn GFLOP/s (of matmul)",
        "peak MiB: attnkit / SDPA / nn.MHA / attnkit+weights",
        "weights ms: attnkit / nn.MHA",
        "weights: attnkit time vs nn.MHA",
        "weights peak MiB: attnkit / nn.MHA",
    ]
    info = machine()
    title = (
        f"MultiHeadAttention, E={EMBED}, H={HEADS}, B=1, {'causal' if args.causal else 'full'}; "
        f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads, torch {info['torch']}, "
        f"fp32 matmul {peak:.0f} GFLOP/s; {info['date']}"
    )
    table = title + "\n\n" + markdown_table(headers, rows)
    print(table)
    name = "mechanisms_causal" if args.causal else "mechanisms"
    payload = {"machine": info, "matmul_gflops": peak, "causal": args.causal, "rows": records}
    print(f"\nwrote {write_results(name, payload, table)}")


if __name__ == "__main__":
    main()
