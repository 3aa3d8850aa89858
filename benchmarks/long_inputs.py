"""Long inputs: linear attention against fused softmax attention, and capture of streamed
statistics at 16k and 32k tokens.

Part ``linear``: the attention op alone (B=1, 8 heads of 64, causal and full), forward, for
N = 1,024..16,384:
PyTorch's fused SDPA (exact softmax attention, O(N²) time) against attnkit's ``"linear"`` backend
(Katharopoulos et al. 2020: a different, approximate attention with O(N) time and memory). The
ratio column is the median of per-round ``SDPA time / linear time`` (interleaved): above 1, the
linear backend is faster. Peak memory: the most tensor memory one forward holds, from the
profiler's allocation events.

Part ``capture`` (issue 20): a small Llama built from a config (2 layers, hidden 128, 2 heads of
64, 1 KV head; random weights), batch 1, forward without autograd at 16,384 and 32,768 tokens:
the plain sdpa forward against the same forward inside ``attnkit.capture(stats=("entropy",
"max", "sink", "mass:context"))`` (all layers; CPU: attnkit's fused C++ statistics kernel).
Time: median of per-round ``capture / plain`` (interleaved; goal <= 1.3x). Memory (goal <= 1.2x):
the most tensor memory the forward holds at once, summed from the profiler's allocation events
(exact, the same from run to run), with the fused kernel's own scratch (one tile per thread, not
a tensor) added to capture's; and, for reference, the whole process's peak resident size in a
fresh child process (``VmHWM``: moves by 50-170 MiB between runs of the same code, malloc arenas
and thread stacks).
Only the last position's logits are computed (``logits_to_keep=1``), as a long-context reader
does, so the attention layers dominate.

    python benchmarks/long_inputs.py [--part linear|capture|all] [--lengths 1024 4096 ...]
        [--capture-lengths 16384 32768] [--repeats 5] [--capture-repeats 3]

Results: ``results/long_inputs.{md,json}`` (linear) and ``results/long_capture.{md,json}``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.attention import backends
from harness import (
    interleaved,
    machine,
    markdown_table,
    median_ratio,
    peak_resident_mib,
    tensor_peak_mib,
    write_results,
)

HEADS, HEAD_DIM = 8, 64
CAPTURE_STATS = ("entropy", "max", "sink", "mass:context")


def _inputs(length: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(1, HEADS, length, HEAD_DIM) for _ in range(3)]


def _call(name: str, length: int, causal: bool):
    inputs = _inputs(length)
    fn = backends.get(name).fn

    def run() -> None:
        with torch.no_grad():
            fn(*inputs, causal=causal)

    return run


def peak_memory_mib(name: str, length: int, causal: bool) -> float:
    """The most tensor memory one forward of the op holds (profiler allocation events)."""
    run = _call(name, length, causal)
    run()  # load the kernels before measuring
    return tensor_peak_mib(run)


def _llama(max_length: int):
    """The 2-layer Llama of the capture part (random weights, sdpa attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=max_length,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def _forward(kind: str, model, length: int):
    """``plain`` or ``capture``: one forward of ``length`` tokens, last position's logits."""
    import attnkit

    ids = torch.randint(0, 1000, (1, length), generator=torch.Generator().manual_seed(0))
    spans = {"context": (0, length // 4)}

    def plain():
        with torch.no_grad():
            return model(input_ids=ids, logits_to_keep=1).logits

    def captured():
        with torch.no_grad(), attnkit.capture(model, stats=CAPTURE_STATS, spans=spans) as rec:
            logits = model(input_ids=ids, logits_to_keep=1).logits
        entropy = rec.stats["entropy"]
        assert len(entropy) == 2 and all(x.shape[-1] == length for x in entropy.values())
        return logits

    return {"plain": plain, "capture": captured}[kind]


def _capture_memory_child(kind: str, length: int) -> None:
    model = _llama(length)
    _forward(kind, model, 256)()  # load the kernels and thread pools first
    _forward(kind, model, length)()
    print(f"{peak_resident_mib():.1f}")


def capture_peak_mib(kind: str, length: int) -> float:
    """Peak resident MiB of a fresh process that ran one forward of ``length`` tokens."""
    command = [sys.executable, __file__, "--capture-memory-child", kind, str(length)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(output.split()[-1])


def kernel_scratch_mib(length: int, value_dim: int = 64, spans: int = 2) -> float:
    """The CPU kernel's scratch, one per thread (``flash_stats.cpp``: a score tile of up to
    256 x 512, the output accumulator and per-row running sums), in MiB."""
    rows = min(256, length)
    floats = rows * 512 + rows * value_dim + 256 * (5 + spans)
    return torch.get_num_threads() * 4 * floats / 2**20


def capture_part(lengths: list[int], repeats: int) -> None:
    """Capture of streamed statistics against the plain sdpa forward at long lengths."""
    rows, records = [], []
    for length in lengths:
        model = _llama(length)
        plain, captured = _forward("plain", model, length), _forward("capture", model, length)
        times = interleaved([plain, captured], repeats, warmup=1)
        ratios = sorted(c / p for p, c in zip(*times, strict=True))
        tensors = {"plain": tensor_peak_mib(plain), "capture": tensor_peak_mib(captured)}
        tensors["capture"] += kernel_scratch_mib(length)
        process = {kind: capture_peak_mib(kind, length) for kind in ("plain", "capture")}
        record = {
            "length": length,
            "repeats": repeats,
            "plain_ms": 1e3 * sorted(times[0])[len(times[0]) // 2],
            "capture_ms": 1e3 * sorted(times[1])[len(times[1]) // 2],
            "time_ratio": ratios[len(ratios) // 2],
            "time_ratio_range": [ratios[0], ratios[-1]],
            "tensor_peak_mib": tensors,
            "tensor_peak_ratio": tensors["capture"] / tensors["plain"],
            "process_peak_mib": process,
            "process_peak_ratio": process["capture"] / process["plain"],
        }
        records.append(record)
        rows.append(
            [
                length,
                f"{record['plain_ms']:.0f}",
                f"{record['capture_ms']:.0f}",
                f"{record['time_ratio']:.2f}x ({ratios[0]:.2f} to {ratios[-1]:.2f})",
                f"{tensors['plain']:.1f} / {tensors['capture']:.1f}",
                f"{record['tensor_peak_ratio']:.3f}x",
                f"{process['plain']:.0f} / {process['capture']:.0f}",
                f"{record['process_peak_ratio']:.2f}x",
            ]
        )
        print(f"N={length}: {rows[-1]}", flush=True)
    info = machine()
    title = (
        "2-layer Llama (hidden 128, 2 heads of 64, 1 KV head), B=1, forward without autograd, "
        f"last logits only; capture of {', '.join(CAPTURE_STATS)} for all layers vs the plain "
        f"sdpa forward; time: median (min to max) of {repeats} interleaved rounds' ratios; tensor "
        "peak: the most tensor memory one forward holds (profiler allocation events), capture's "
        "with the kernel's scratch added; process peak: peak resident size of a fresh process "
        f"(noisy, for reference); {info['cpu']}, {info['threads']} threads, torch "
        f"{info['torch']}; {info['date']}"
    )
    headers = [
        "N",
        "plain ms",
        "capture ms",
        "capture / plain time",
        "tensor peak MiB plain / capture",
        "tensor peak ratio",
        "process peak MiB plain / capture",
        "process peak ratio",
    ]
    table = title + "\n\n" + markdown_table(headers, rows)
    print(table)
    path = write_results("long_capture", {"machine": info, "rows": records}, table)
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["linear", "capture", "all"], default="all")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--capture-lengths", type=int, nargs="+", default=[16384, 32768])
    parser.add_argument("--capture-repeats", type=int, default=3)
    parser.add_argument("--capture-memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capture_memory_child:
        _capture_memory_child(args.capture_memory_child[0], int(args.capture_memory_child[1]))
        return
    if args.part in ("linear", "all"):
        linear_part(args.lengths, args.repeats)
    if args.part in ("capture", "all"):
        capture_part(args.capture_lengths, args.capture_repeats)


def linear_part(lengths: list[int], repeats: int) -> None:
    """Linear attention against fused SDPA, the attention op alone."""
    rows, records = [], []
    with Progress(transient=True) as progress:
        task = progress.add_task("measuring", total=2 * len(lengths))
        for causal in (False, True):
            for length in lengths:
                sdpa, linear = interleaved(
                    [_call("sdpa", length, causal), _call("linear", length, causal)],
                    repeats,
                    warmup=1,
                )
                record = {
                    "length": length,
                    "causal": causal,
                    "sdpa_ms": 1e3 * sorted(sdpa)[len(sdpa) // 2],
                    "linear_ms": 1e3 * sorted(linear)[len(linear) // 2],
                    "speedup": median_ratio(sdpa, linear),
                    "sdpa_peak_mib": peak_memory_mib("sdpa", length, causal),
                    "linear_peak_mib": peak_memory_mib("linear", length, causal),
                }
                records.append(record)
                rows.append(
                    [
                        length,
                        "causal" if causal else "full",
                        f"{record['sdpa_ms']:.1f}",
                        f"{record['linear_ms']:.1f}",
                        f"{record['speedup']:.2f}",
                        f"{record['sdpa_peak_mib']:.1f} / {record['linear_peak_mib']:.1f}",
                    ]
                )
                progress.advance(task)

    info = machine()
    title = (
        f"Attention op, B=1, H={HEADS}, D={HEAD_DIM}: fused SDPA (exact) vs linear attention "
        f"(approximate); {info['cpu']}, {info['threads']} threads, torch {info['torch']}; "
        f"{info['date']}"
    )
    headers = [
        "N",
        "mask",
        "SDPA ms",
        "linear ms",
        "linear speed-up",
        "tensor peak MiB SDPA / linear",
    ]
    table = title + "\n\n" + markdown_table(headers, rows)
    print(table)
    path = write_results("long_inputs", {"machine": info, "rows": records}, table)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
