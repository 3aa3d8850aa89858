"""Linear attention against fused softmax attention as inputs grow long.

The attention op alone (B=1, 8 heads of 64, causal and full), forward, for N = 1,024..16,384:
PyTorch's fused SDPA (exact softmax attention, O(N²) time) against attnkit's ``"linear"`` backend
(Katharopoulos et al. 2020: a different, approximate attention with O(N) time and memory). The
ratio column is the median of per-round ``SDPA time / linear time`` (interleaved): above 1, the
linear backend is faster. Peak memory of one forward is measured in a child process.

    python benchmarks/long_inputs.py [--lengths 1024 4096 ...] [--repeats 5]
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
    resident_mib,
    write_results,
)

HEADS, HEAD_DIM = 8, 64


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


def _memory_child(name: str, length: int, causal: bool) -> None:
    _call(name, 256, causal)()  # load the kernels before measuring
    run = _call(name, length, causal)
    before = resident_mib()
    run()
    print(f"{max(peak_resident_mib() - before, 0):.1f}")


def peak_memory_mib(name: str, length: int, causal: bool) -> float:
    command = [sys.executable, __file__, "--memory-child", name, str(length), str(int(causal))]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        name, length, causal = args.memory_child
        _memory_child(name, int(length), bool(int(causal)))
        return

    rows, records = [], []
    with Progress(transient=True) as progress:
        task = progress.add_task("measuring", total=2 * len(args.lengths))
        for causal in (False, True):
            for length in args.lengths:
                sdpa, linear = interleaved(
                    [_call("sdpa", length, causal), _call("linear", length, causal)],
                    args.repeats,
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
                        f"{record['sdpa_peak_mib']:.0f} / {record['linear_peak_mib']:.0f}",
                    ]
                )
                progress.advance(task)

    info = machine()
    title = (
        f"Attention op, B=1, H={HEADS}, D={HEAD_DIM}: fused SDPA (exact) vs linear attention "
        f"(approximate); {info['cpu']}, {info['threads']} threads, torch {info['torch']}; "
        f"{info['date']}"
    )
    headers = ["N", "mask", "SDPA ms", "linear ms", "linear speed-up", "peak MiB SDPA / linear"]
    table = title + "\n\n" + markdown_table(headers, rows)
    print(table)
    path = write_results("long_inputs", {"machine": info, "rows": records}, table)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
