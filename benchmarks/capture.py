"""The cost of seeing attention: attnkit capture() against sdpa and eager, side by side.

A 4-layer Llama-style model (hidden 512, 8 heads, 4 KV heads) built from a config, batch 1, at
512, 2,048 and 4,096 tokens, forward without autograd:

- plain: the sdpa model, nothing recorded;
- eager: ``attn_implementation="eager"`` with ``output_attentions=True`` (the usual way to see
  attention: every N×N matrix);
- capture: the sdpa model inside ``attnkit.capture(stats=("entropy", "max", "sink",
  "mass:context"))`` for all layers.

- capture weights: the sdpa model inside ``attnkit.capture(weights=True)`` for all layers, the
  per-layer weights read from ``rec.weights`` (what a user does to see them).

Ratios are medians of per-round ``time / plain time`` (interleaved). Goals (issue 4): capture
<= 1.3x plain at 2,048 tokens, peak memory <= 1.2x plain at 4,096 tokens. The attention op
alone (``attention_stats`` with the same statistics against SDPA, goal <= 1.5x) is measured too.
Goal of issue 21: capture weights <= 1.0x eager (median of per-round ``capture weights time /
eager time``) with a peak memory no higher than eager's. ``--selective`` measures instead what
``layers=`` (one layer of four), ``heads=`` (two heads of eight) and ``last_query=True`` cost
against capturing every weight, as medians of per-round ratios.

    python benchmarks/capture.py [--lengths 512 2048 4096] [--repeats 5] [--selective]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).parent))

import attnkit
from attnkit.recording import attention_stats
from harness import (
    interleaved,
    machine,
    markdown_table,
    peak_resident_mib,
    resident_mib,
    write_results,
)

STATS = ("entropy", "max", "sink", "mass:context")


def build(implementation: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=4096,
    )
    config._attn_implementation = implementation
    return LlamaForCausalLM(config).eval()


def runners(length: int) -> dict[str, object]:
    sdpa, eager = build("sdpa"), build("eager")
    ids = torch.randint(0, 1000, (1, length), generator=torch.Generator().manual_seed(0))
    spans = {"context": (0, length // 4)}

    def plain():
        with torch.no_grad():
            return sdpa(input_ids=ids).logits

    def eager_weights():
        with torch.no_grad():
            return eager(input_ids=ids, output_attentions=True).logits

    def captured():
        with torch.no_grad(), attnkit.capture(sdpa, stats=STATS, spans=spans):
            return sdpa(input_ids=ids).logits

    def captured_weights(**options):
        def run():
            with torch.no_grad(), attnkit.capture(sdpa, weights=True, **options) as rec:
                logits = sdpa(input_ids=ids).logits
            rec.weights  # noqa: B018 (the user's view of the weights is part of the cost)
            return logits

        return run

    return {
        "plain": plain,
        "eager": eager_weights,
        "capture": captured,
        "capture_weights": captured_weights(),
        "one_layer": captured_weights(layers=["model.layers.0.self_attn"]),
        "two_heads": captured_weights(heads=[0, 1]),
        "last_query": captured_weights(last_query=True),
    }


MAIN = ("plain", "eager", "capture", "capture_weights")
SELECTIVE = ("capture_weights", "one_layer", "two_heads", "last_query")


def op_runners(length: int) -> dict[str, object]:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 8, length, 64, generator=gen)
    k, v = (torch.randn(1, 4, length, 64, generator=gen) for _ in range(2))
    spans = {"context": (0, length // 4)}

    def sdpa():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def stats():
        with torch.no_grad():
            attention_stats(q, k, v, causal=True, stats=STATS, spans=spans)

    return {"sdpa": sdpa, "stats": stats}


def _memory_child(kind: str, length: int) -> None:
    run = runners(length)[kind]
    runners(64)[kind]()  # load kernels and thread pools first
    before = resident_mib()
    run()
    print(f"{peak_resident_mib():.1f} {max(peak_resident_mib() - before, 0):.1f}")


def peak_memory_mib(kind: str, length: int) -> tuple[float, float]:
    """(peak resident MiB of the whole process, MiB the forward added) in a fresh process."""
    command = [sys.executable, __file__, "--memory-child", kind, str(length)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    peak, added = (float(x) for x in output.split())
    return peak, added


def _ratios(times: list[list[float]]) -> list[float]:
    base = times[0]
    return [
        sorted(t / b for t, b in zip(other, base, strict=True))[len(base) // 2] for other in times
    ]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _pair_ratio(candidate: list[float], reference: list[float]) -> float:
    """Median over rounds of ``candidate / reference``."""
    return _median([c / r for c, r in zip(candidate, reference, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--selective", action="store_true")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    if args.selective:
        selective(args.lengths, args.repeats)
        return

    rows, records = [], []
    with Progress(transient=True) as progress:
        task = progress.add_task("measuring", total=len(args.lengths))
        for length in args.lengths:
            model = runners(length)
            model_times = interleaved([model[k] for k in MAIN], args.repeats, warmup=1)
            times = dict(zip(MAIN, model_times, strict=True))
            op = op_runners(length)
            op_times = interleaved(list(op.values()), args.repeats, warmup=1)
            memory = {kind: peak_memory_mib(kind, length) for kind in MAIN}
            _, eager_ratio, capture_ratio, weights_ratio = _ratios(model_times)
            record = {
                "length": length,
                "plain_ms": 1e3 * sorted(model_times[0])[len(model_times[0]) // 2],
                "eager_ratio": eager_ratio,
                "capture_ratio": capture_ratio,
                "capture_weights_ratio": weights_ratio,
                "capture_weights_vs_eager": _pair_ratio(times["capture_weights"], times["eager"]),
                "op_sdpa_ms": 1e3 * sorted(op_times[0])[len(op_times[0]) // 2],
                "op_stats_ratio": _ratios(op_times)[1],
                "peak_mib": {kind: peak for kind, (peak, _) in memory.items()},
                "forward_added_mib": {kind: added for kind, (_, added) in memory.items()},
                "capture_memory_ratio": memory["capture"][0] / memory["plain"][0],
                "capture_weights_memory_vs_eager": memory["capture_weights"][0]
                / memory["eager"][0],
            }
            records.append(record)
            rows.append(
                [
                    length,
                    f"{record['plain_ms']:.0f}",
                    f"{eager_ratio:.2f}x",
                    f"{capture_ratio:.2f}x",
                    f"{record['op_stats_ratio']:.2f}x",
                    " / ".join(f"{memory[k][0]:.0f}" for k in ("plain", "eager", "capture")),
                    " / ".join(f"{memory[k][1]:.0f}" for k in ("plain", "eager", "capture")),
                    f"{record['capture_memory_ratio']:.2f}x",
                    f"{weights_ratio:.2f}x",
                    f"{record['capture_weights_vs_eager']:.2f}x",
                    f"{memory['capture_weights'][0]:.0f} ({memory['capture_weights'][1]:.0f})",
                    f"{record['capture_weights_memory_vs_eager']:.2f}x",
                ]
            )
            progress.advance(task)

    info = machine()
    title = (
        "4-layer Llama (hidden 512, 8 heads, 4 KV heads), B=1, forward; capture of "
        f"{', '.join(STATS)} for all layers; capture weights: every layer's weights, read from "
        f"rec.weights; {info['cpu']}, {info['threads']} threads, torch {info['torch']}; "
        f"{args.repeats} interleaved rounds; {info['date']}"
    )
    headers = [
        "N",
        "plain sdpa ms",
        "eager + weights",
        "attnkit capture",
        "op: stats vs SDPA",
        "peak MiB plain / eager / capture",
        "forward adds MiB plain / eager / capture",
        "capture peak vs plain",
        "capture weights",
        "capture weights vs eager",
        "capture weights peak MiB (added)",
        "capture weights peak vs eager",
    ]
    table = title + "\n\n" + markdown_table(headers, rows)
    print(table)
    print(f"\nwrote {write_results('capture', {'machine': info, 'rows': records}, table)}")


def selective(lengths: list[int], repeats: int) -> None:
    """What selective capture costs against capturing every weight (``--selective``)."""
    rows, records = [], []
    for length in lengths:
        model = runners(length)
        times = dict(
            zip(
                SELECTIVE,
                interleaved([model[k] for k in SELECTIVE], repeats, warmup=1),
                strict=True,
            )
        )
        memory = {kind: peak_memory_mib(kind, length) for kind in SELECTIVE}
        full = times["capture_weights"]
        for kind in SELECTIVE[1:]:
            record = {
                "length": length,
                "kind": kind,
                "time_vs_all": _pair_ratio(times[kind], full),
                "ms": 1e3 * _median(times[kind]),
                "all_ms": 1e3 * _median(full),
                "forward_added_mib": memory[kind][1],
                "all_forward_added_mib": memory["capture_weights"][1],
            }
            records.append(record)
            rows.append(
                [
                    length,
                    kind,
                    f"{record['ms']:.0f} / {record['all_ms']:.0f}",
                    f"{record['time_vs_all']:.2f}x",
                    f"{memory[kind][1]:.0f} / {memory['capture_weights'][1]:.0f}",
                ]
            )
    info = machine()
    title = (
        "Selective capture(weights=True) on the 4-layer Llama, B=1, forward + rec.weights: "
        "layers= one of 4 layers, heads= 2 of 8 heads, last_query=True, against every weight; "
        f"{info['cpu']}, {info['threads']} threads, torch {info['torch']}; {repeats} "
        f"interleaved rounds; {info['date']}"
    )
    headers = ["N", "selection", "ms: selective / all", "time vs all", "forward adds MiB"]
    table = title + "\n\n" + markdown_table(headers, rows)
    print(table)
    payload = {"machine": info, "rows": records}
    print(f"\nwrote {write_results('capture_selective', payload, table)}")


if __name__ == "__main__":
    main()
