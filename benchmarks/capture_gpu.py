"""Capture on a GPU: the Triton statistics kernel against FlashAttention, a 1B-shaped Llama.

Run by ``benchmarks/gpu_check.sh`` on a CUDA machine (issue 20); every part writes
``<out>/capture_gpu.{md,json}`` as soon as it finishes, so a run cut short keeps what it measured.
Parts, most important first:

1. ``op``: the attention op, B=1, 32 heads, 8 KV heads, causal, bf16, head size 64 and 128,
   N = 2,048..16,384: ``attention_stats`` (entropy, max, sink, one span mass: attnkit's Triton
   kernel) against ``scaled_dot_product_attention`` restricted to the FlashAttention backend
   (goal <= 1.3x). Medians (min to max) of per-round ratios over interleaved rounds, each round
   timing a calibrated number of calls with CUDA events. Each size also checks exactness: the
   output and statistics of the last 64 queries against float32 computed from the same bf16
   inputs, and the kernel's output error beside FlashAttention's own (flash-attn's rule: at most
   2x).
2. ``model``: a 1B-shaped Llama built from a config (16 layers, hidden 2048, 32 heads, 8 KV
   heads, MLP 8192, vocabulary 32,000; random weights, bf16), one forward of 8,192 tokens
   without autograd, last logits only: plain sdpa against the same inside ``attnkit.capture``
   with the op's statistics (goal <= 1.2x), and the peak CUDA memory of each.
3. ``generate``: the same model, greedy, 64 new tokens after a 512-token prompt, batch 1:
   ``attnkit.llm.generate`` (signals of every layer and head) against plain
   ``model.generate()`` (goal <= 1.1x).
4. ``extra``: the op at 8,192 tokens with ``argmax`` too, and in fp16.

    PYTHONPATH=src python benchmarks/capture_gpu.py --out DIR [--parts op model ...] [--dry]

``--dry`` runs every part with tiny sizes on whatever device there is (CPU: float32, attnkit's
C++ kernel) to test this script; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.recording import stats as S

STATS = ("entropy", "max", "sink", "mass:context")


ORDER = {"op": 1, "model": 3, "generate": 4, "extra": 6}  # gpu_check.sh adds 2_ and 5_ tests


class Report:
    """Each part's markdown in ``<out>/parts/<n>_<part>.md`` and record in ``<part>.json``;
    ``capture_gpu.{md,json}`` are rebuilt from all parts (also those of earlier invocations and
    of gpu_check.sh's tests) after every write."""

    def __init__(self, out: Path, info: dict[str, object]):
        self.out, self.info = out, info
        self.parts = out / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        (self.parts / "machine.json").write_text(json.dumps(info, indent=2) + "\n")

    def add(self, name: str, text: str, record: object) -> None:
        (self.parts / f"{ORDER.get(name, 9)}_{name}.md").write_text(f"## {name}\n\n{text}\n")
        (self.parts / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        self.write()

    def write(self) -> None:
        collect(self.out)


def collect(out: Path) -> None:
    """Rebuild ``capture_gpu.md`` and ``capture_gpu.json`` from ``out/parts``."""
    parts = out / "parts"
    info = json.loads((parts / "machine.json").read_text())
    head = (
        f"# capture on a GPU ({info['device_name']})\n\n"
        f"{info['device_name']}, torch {info['torch']}, triton {info['triton']}, transformers "
        f"{info['transformers']}, Python {info['python']}; {info['date']}"
        + ("; DRY RUN (tiny sizes, numbers meaningless)" if info["dry"] else "")
        + "\n"
    )
    body = "\n".join(path.read_text() for path in sorted(parts.glob("[0-9]_*.md")))
    (out / "capture_gpu.md").write_text(head + "\n" + body)
    payload = {"machine": info}
    for path in sorted(parts.glob("*.json")):
        if path.name != "machine.json":
            payload[path.stem] = json.loads(path.read_text())
    (out / "capture_gpu.json").write_text(json.dumps(payload, indent=2) + "\n")


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def machine(device: torch.device, dry: bool) -> dict[str, object]:
    def version(name: str) -> str:
        try:
            return __import__(name).__version__
        except Exception:  # not installed
            return "absent"

    return {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "triton": version("triton"),
        "transformers": version("transformers"),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "dry": dry,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``calls`` back-to-back calls (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls
    begin = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - begin) / calls


def compare(
    fns: list[Callable[[], object]], rounds: int, device: torch.device, target_s: float = 0.05
) -> tuple[list[float], list[list[float]]]:
    """Median seconds per call of each function, and per-round ratios to the first.

    Each function is warmed up (autotuning, compilation) and calibrated to ``target_s`` per
    measurement; rounds rotate who goes first.
    """
    calls = []
    for fn in fns:
        fn()
        fn()
        sync(device)
        once = seconds(fn, 1, device)
        calls.append(max(1, min(200, math.ceil(target_s / max(once, 1e-6)))))
    times: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        order = list(range(len(fns)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            times[i].append(seconds(fns[i], calls[i], device))
    medians = [sorted(t)[len(t) // 2] for t in times]
    ratios = [sorted(a / b for a, b in zip(t, times[0], strict=True)) for t in times]
    return medians, ratios


def spread(ratios: list[float]) -> str:
    return f"{ratios[len(ratios) // 2]:.2f}x ({ratios[0]:.2f} to {ratios[-1]:.2f})"


def reference_rows(q, k, v, rows: slice, spans: dict, causal: bool, stats=STATS):
    """Output and statistics of some query rows in float32 (float64 statistics) from the same
    rounded inputs: the exactness reference."""
    group = q.shape[1] // k.shape[1]
    kf = k.float().repeat_interleave(group, 1)
    vf = v.float().repeat_interleave(group, 1)
    qf = q[..., rows, :].float()
    scores = qf @ kf.transpose(-1, -2) * q.shape[-1] ** -0.5
    if causal:
        offset = k.shape[-2] - q.shape[-2]
        positions = torch.arange(rows.start, rows.stop, device=q.device) + offset
        future = torch.arange(k.shape[-2], device=q.device)[None, :] > positions[:, None]
        scores = scores.masked_fill(future, -math.inf)
    weights = torch.softmax(scores, -1)
    out = weights @ vf
    return out, S.stats_from_weights(weights.double(), stats, spans), weights


def op_inputs(length: int, head_dim: int, heads: int, kv_heads: int, dtype, device):
    gen = torch.Generator(device=device).manual_seed(length + head_dim)
    q = torch.randn(1, heads, length, head_dim, generator=gen, device=device, dtype=dtype)
    k = torch.randn(1, kv_heads, length, head_dim, generator=gen, device=device, dtype=dtype)
    v = torch.randn(1, kv_heads, length, head_dim, generator=gen, device=device, dtype=dtype)
    return q, k, v


def sdpa_flash(q, k, v, device):
    """SDPA restricted to FlashAttention on a GPU (keys repeated for GQA if it must)."""
    if device.type != "cuda":
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def gqa():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    try:
        gqa()
        return gqa
    except RuntimeError:  # this build's flash kernel without enable_gqa
        group = q.shape[1] // k.shape[1]
        kr, vr = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)

        def repeated():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, kr, vr, is_causal=True)

        return repeated


def op_case(length, head_dim, dtype, device, rounds, stats=STATS, heads=32, kv_heads=8):
    """One size of the op part: timings, ratios, exactness."""
    q, k, v = op_inputs(length, head_dim, heads, kv_heads, dtype, device)
    spans = {"context": (0, length // 4)}
    flash = sdpa_flash(q, k, v, device)

    def ours():
        with torch.no_grad():
            return S.attention_stats(q, k, v, causal=True, stats=stats, spans=spans)

    (flash_s, ours_s), ratios = compare([flash, ours], rounds, device)
    flops = 4 * heads * head_dim * length * length / 2  # causal: half the score matrix
    # exactness on the last 64 queries (they see every key)
    rows = slice(length - min(64, length), length)
    ref_out, ref_stats, ref_weights = reference_rows(q, k, v, rows, spans, causal=True, stats=stats)
    got = ours()
    out_err = (got.output[..., rows, :].float() - ref_out).abs().max().item()
    flash_err = (flash()[..., rows, :].float() - ref_out).abs().max().item()
    stat_err = {
        name: (got.stats[name][..., rows].double() - ref_stats[name]).abs().max().item()
        for name in stats
        if name != "argmax"
    }
    if "argmax" in stats:  # the key named holds the largest weight, ties aside
        chosen = got.stats["argmax"][..., rows].unsqueeze(-1)
        held = ref_weights.gather(-1, chosen).squeeze(-1).double()
        stat_err["argmax (weight short of the max)"] = (ref_stats["max"] - held).max().item()
    return {
        "length": length,
        "head_dim": head_dim,
        "dtype": str(dtype).removeprefix("torch."),
        "heads": heads,
        "kv_heads": kv_heads,
        "stats": list(stats),
        "sdpa_flash_ms": 1e3 * flash_s,
        "stats_ms": 1e3 * ours_s,
        "ratio": ratios[1][len(ratios[1]) // 2],
        "ratio_min_max": [ratios[1][0], ratios[1][-1]],
        "rounds": rounds,
        "sdpa_tflops": flops / flash_s / 1e12,
        "stats_tflops": flops / ours_s / 1e12,
        "out_err_vs_fp32": out_err,
        "flash_out_err_vs_fp32": flash_err,
        "stat_err_vs_fp64": stat_err,
        "text_ratio": spread(ratios[1]),
    }


def chosen_configs() -> dict[str, str]:
    try:
        from attnkit.recording import triton_stats

        return triton_stats.chosen_configs()
    except Exception:  # no triton (dry run on a CPU)
        return {}


def op_part(report: Report, device, dtype, dry: bool, rounds: int) -> None:
    lengths = [256, 512] if dry else [2048, 4096, 8192, 16384]
    records, rows = [], []
    for head_dim in (64, 128):
        for length in lengths:
            record = op_case(length, head_dim, dtype, device, rounds)
            records.append(record)
            print(f"op {head_dim=} {length=}: {record['text_ratio']}", flush=True)
            rows.append(op_row(record))
            report.add("op", "(in progress)\n\n" + op_table(rows), {"rows": records})
    text = (
        f"Attention op, B=1, 32 heads, 8 KV heads, causal, {str(dtype).removeprefix('torch.')}; "
        f"attnkit `attention_stats` ({', '.join(STATS)}; the Triton kernel) vs SDPA restricted "
        "to FlashAttention; ratio: median (min to max) of per-round time ratios over "
        f"{rounds} interleaved rounds. Errors: last 64 queries against float32 from the same "
        "rounded inputs (statistics in float64); flash-attn's rule: attnkit's output error at "
        "most 2x FlashAttention's.\n\n" + op_table(rows)
    )
    report.add("op", text, {"rows": records, "configs": chosen_configs()})


def op_row(r: dict) -> list[object]:
    return [
        r["dtype"],
        r["head_dim"],
        f"{r['length']:,}",
        f"{r['sdpa_flash_ms']:.3f}",
        f"{r['stats_ms']:.3f}",
        r["text_ratio"],
        f"{r['sdpa_tflops']:.0f} / {r['stats_tflops']:.0f}",
        f"{r['out_err_vs_fp32']:.1e} / {r['flash_out_err_vs_fp32']:.1e}",
        f"{max(r['stat_err_vs_fp64'].values()):.1e}",
    ]


def op_table(rows: list[list[object]]) -> str:
    headers = [
        "dtype",
        "head dim",
        "N",
        "SDPA flash ms",
        "attnkit stats ms",
        "stats / flash",
        "TFLOP/s flash / stats",
        "output error attnkit / flash",
        "largest statistic error",
    ]
    return table(headers, rows)


def llama(dry: bool, device, dtype, max_length: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if dry:
        shape = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)  # fmt: skip
    else:
        shape = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=32000)  # fmt: skip
    config = LlamaConfig(
        **shape,
        max_position_embeddings=max_length,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval(), shape


def model_part(report: Report, device, dtype, dry: bool, rounds: int) -> None:
    import attnkit

    length = 512 if dry else 8192
    model, shape = llama(dry, device, dtype, length)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, shape["vocab_size"], (1, length), generator=gen).to(device)
    spans = {"context": (0, length // 4)}
    recorded = {}

    def plain():
        with torch.no_grad():
            return model(input_ids=ids, logits_to_keep=1).logits

    def captured():
        with torch.no_grad(), attnkit.capture(model, stats=STATS, spans=spans) as rec:
            logits = model(input_ids=ids, logits_to_keep=1).logits
        recorded["rec"] = rec
        return logits

    (plain_s, capture_s), ratios = compare([plain, captured], rounds, device, target_s=0.2)
    same = (plain() - captured()).abs().max().item()
    entropy = recorded["rec"].stats["entropy"]
    layers_ok = len(entropy) == shape["num_hidden_layers"] and all(
        x.shape == (1, shape["num_attention_heads"], length) and bool(x.isfinite().all())
        for x in entropy.values()
    )
    memory = {}
    for name, fn in (("plain", plain), ("capture", captured)):
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fn()
            sync(device)
            memory[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:
            memory[name] = float("nan")
    record = {
        "length": length,
        "shape": shape,
        "dtype": str(dtype).removeprefix("torch."),
        "plain_ms": 1e3 * plain_s,
        "capture_ms": 1e3 * capture_s,
        "ratio": ratios[1][len(ratios[1]) // 2],
        "ratio_min_max": [ratios[1][0], ratios[1][-1]],
        "rounds": rounds,
        "forward_peak_mib": memory,
        "memory_ratio": memory["capture"] / memory["plain"] if memory["plain"] else None,
        "max_logit_difference": same,
        "every_layer_recorded": layers_ok,
    }
    text = (
        f"Llama ({shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, "
        f"{shape['num_attention_heads']} heads, {shape['num_key_value_heads']} KV heads, random "
        f"weights, {record['dtype']}), B=1, {length:,} tokens, forward without autograd, last "
        f"logits only; capture of {', '.join(STATS)} for every layer vs the plain sdpa forward; "
        f"median (min to max) of {rounds} interleaved rounds; peak memory: CUDA memory the "
        "forward allocates above the model.\n\n"
        + table(
            [
                "N",
                "plain ms",
                "capture ms",
                "capture / plain",
                "peak MiB plain / capture",
                "logits differ by",
                "every layer recorded",
            ],
            [
                [
                    f"{length:,}",
                    f"{record['plain_ms']:.1f}",
                    f"{record['capture_ms']:.1f}",
                    spread(ratios[1]),
                    f"{memory['plain']:.0f} / {memory['capture']:.0f}",
                    f"{same:.1e}",
                    layers_ok,
                ]
            ],
        )
    )
    report.add("model", text, record)
    report.model = model  # the generate part reuses it


class WordTokenizer:
    """A stand-in tokenizer over the model's ids: text is space-separated integers."""

    pad_token_id = 0
    eos_token_id = None

    def __call__(self, text, return_tensors=None, return_offsets_mapping=False):
        ids = torch.tensor([[int(word) for word in text.split()]])
        if return_offsets_mapping:
            raise ValueError("pass the context as token positions")
        return _Encoding(input_ids=ids, attention_mask=torch.ones_like(ids))

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(int(i)) for i in ids)


class _Encoding(dict):
    def to(self, device):
        return _Encoding({k: v.to(device) for k, v in self.items()})


def generate_part(report: Report, device, dtype, dry: bool, rounds: int) -> None:
    from attnkit.llm import generate

    model = getattr(report, "model", None)
    prompt, new = (64, 8) if dry else (512, 64)
    if model is None:
        model, _ = llama(dry, device, dtype, prompt + new)
    vocab = model.config.vocab_size
    ids = torch.randint(1, vocab, (prompt,), generator=torch.Generator().manual_seed(0))
    text = " ".join(str(int(i)) for i in ids)
    kwargs = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False}
    on_device = ids[None].to(device)
    mask = torch.ones_like(on_device)

    def plain():
        with torch.no_grad():
            out = model.generate(input_ids=on_device, attention_mask=mask, **kwargs)
        sync(device)
        return out

    def traced():
        trace = generate(model, WordTokenizer(), text, context=(0, prompt // 2), **kwargs)
        sync(device)
        return trace

    (plain_s, traced_s), ratios = compare([plain, traced], rounds, device, target_s=0.0)
    record = {
        "prompt": prompt,
        "new_tokens": new,
        "plain_ms": 1e3 * plain_s,
        "signals_ms": 1e3 * traced_s,
        "ratio": ratios[1][len(ratios[1]) // 2],
        "ratio_min_max": [ratios[1][0], ratios[1][-1]],
        "rounds": rounds,
    }
    text = (
        f"Greedy generation, {prompt} prompt tokens, {new} new tokens, batch 1, the model above: "
        "`attnkit.llm.generate` (signals of every layer and head) vs plain `model.generate()`; "
        f"median (min to max) of {rounds} interleaved rounds.\n\n"
        + table(
            ["prompt", "new tokens", "plain ms", "with signals ms", "signals / plain"],
            [
                [
                    prompt,
                    new,
                    f"{record['plain_ms']:.0f}",
                    f"{record['signals_ms']:.0f}",
                    spread(ratios[1]),
                ]
            ],
        )
    )
    report.add("generate", text, record)


def extra_part(report: Report, device, dtype, dry: bool, rounds: int) -> None:
    length = 256 if dry else 8192
    cases = [(("entropy", "max", "argmax", "sink", "mass:context"), dtype)]
    if device.type == "cuda":
        cases.append((STATS, torch.float16))
    records, rows = [], []
    for stats, case_dtype in cases:
        for head_dim in (64, 128):
            record = op_case(length, head_dim, case_dtype, device, rounds, stats=stats)
            records.append(record)
            rows.append(op_row(record))
            print(f"extra {stats} {case_dtype} {head_dim=}: {record['text_ratio']}", flush=True)
    text = (
        "The op as above at one length: with `argmax` as well (first rows), and in fp16.\n\n"
        + op_table(rows)
    )
    report.add("extra", text, {"rows": records, "configs": chosen_configs()})


PARTS = {"op": op_part, "model": model_part, "generate": generate_part, "extra": extra_part}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--dry", action="store_true", help="tiny sizes, to test the script")
    parser.add_argument("--collect", action="store_true", help="only rebuild capture_gpu.md")
    args = parser.parse_args()
    if args.collect:
        collect(args.out)
        return
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry:
        parser.error("no CUDA device: run with --dry to test the script on the CPU")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    rounds = args.rounds or (2 if args.dry else 10)
    report = Report(args.out, machine(device, args.dry))
    for name in args.parts:
        started = time.perf_counter()
        try:
            PARTS[name](report, device, dtype, args.dry, rounds if name != "generate" else 5)
        except Exception:  # keep the other parts: say what failed, in the report too
            trace = traceback.format_exc()
            print(trace, file=sys.stderr, flush=True)
            report.add(name, f"FAILED:\n\n```\n{trace}```", {"error": trace})
        print(f"part {name}: {time.perf_counter() - started:.0f} s", flush=True)
    print(f"wrote {args.out / 'capture_gpu.md'}")


if __name__ == "__main__":
    main()
