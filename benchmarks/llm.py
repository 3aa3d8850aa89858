"""The cost of attention signals during generation: attnkit.llm.generate vs plain generate().

A small Llama-style model (4 layers, hidden 256, 8 heads, 4 KV heads) built from a config,
greedy decoding of 64 new tokens after prompts of 128 and 512 tokens, batch 1, sdpa; and a batch
of 4 prompts of different lengths (left-padded, per-example spans) against plain generate() on the
same padded batch. Then the same prompts on a model of realistic shape ("base": 12 layers, hidden
768, 12 heads, 4 KV heads, vocabulary 32,000; random weights), where the per-step Python work is a
smaller share; and an encoder-decoder ("bart": BART, 4 + 4 layers, hidden 256), whose signals are
the decoder's cross-attention over the source. The ratio is the median of per-round
``signals time / plain time`` (interleaved, who goes first rotating), with the spread of those
ratios (first to third quartile): on a shared machine one round moves by several per cent, so
read the median against its spread. Goal (issue 20): <= 1.1x.

    python benchmarks/llm.py [--models small base bart] [--prompts 128 512]
                             [--batch 128 112 96 80] [--new 64] [--repeats 5]
                             [--device cuda]   # writes results/llm_gpu.{md,json}
    python benchmarks/llm.py --profile [--models ...] [--prompts 128] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.llm import generate
from harness import interleaved, machine, markdown_table, write_results


class WordTokenizer:
    """A stand-in tokenizer over the model's ids: text is space-separated integers."""

    pad_token_id = 0
    eos_token_id = None

    def __call__(self, text, return_tensors=None, return_offsets_mapping=False):
        ids = [int(word) for word in text.split()]
        if return_offsets_mapping:
            raise ValueError("pass the context as token positions")
        tensor = torch.tensor([ids])
        return _Encoding(input_ids=tensor, attention_mask=torch.ones_like(tensor))

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(int(i)) for i in ids)


class _Encoding(dict):
    def to(self, device):
        return _Encoding({k: v.to(device) for k, v in self.items()})


def build(name: str = "small"):
    """The benchmark's models from a config (random weights): ``small``, ``base``, ``bart``."""
    from transformers import BartConfig, BartForConditionalGeneration, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if name == "bart":
        config = BartConfig(
            vocab_size=1000, d_model=256, encoder_layers=4, decoder_layers=4,
            encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=688,
            decoder_ffn_dim=688, max_position_embeddings=1024, pad_token_id=0, bos_token_id=1,
            eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None,
        )  # fmt: skip
        config._attn_implementation = "sdpa"
        return BartForConditionalGeneration(config).eval()
    shapes = {
        "small": {"vocab_size": 1000, "hidden_size": 256, "intermediate_size": 688,
                  "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4},
        "base": {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 2048,
                 "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 4},
    }  # fmt: skip
    config = LlamaConfig(
        **shapes[name], max_position_embeddings=1024, pad_token_id=0, bos_token_id=None,
        eos_token_id=None,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def case(model, lengths: list[int], kwargs: dict) -> tuple[Callable, Callable]:
    """``(plain, traced)``: plain ``generate()`` and ``attnkit.llm.generate`` on prompts of
    ``lengths`` tokens (random ids; a batch padded as ``generate()`` pads it)."""
    device = model.device
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 1000, (n,), generator=generator) for n in lengths]
    width = max(lengths)
    if model.config.is_encoder_decoder:  # right padding, as generate() pads a source
        ids = torch.stack([torch.cat([p, p.new_zeros(width - len(p))]) for p in prompts])
    else:  # left padding, as generate() pads a prompt
        ids = torch.stack([torch.cat([p.new_zeros(width - len(p)), p]) for p in prompts])
    mask, ids = (ids != 0).long().to(device), ids.to(device)
    texts = [" ".join(str(int(i)) for i in p) for p in prompts]
    contexts = [(0, n // 2) for n in lengths]
    tokenizer = WordTokenizer()

    def plain() -> None:
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def traced() -> None:
        if len(texts) == 1:
            generate(model, tokenizer, texts[0], context=contexts[0], **kwargs)
        else:
            generate(model, tokenizer, texts, context=contexts, **kwargs)

    return plain, traced


def profile(names: list[str], lengths: list[int], kwargs: dict, repeats: int) -> None:
    """Where the time goes: per call of each transformers attention module and decoder layer,
    the median time inside plain ``generate()`` and inside ``attnkit.llm.generate`` (interleaved
    runs of the same prompts), and the generation as a whole."""
    rows = [row for name in names for row in _profile_model(name, lengths, kwargs, repeats)]
    headers = ["model", "module", "calls per run", "plain us", "with signals us", "difference"]
    print(markdown_table(headers, rows))


def _profile_model(name: str, lengths: list[int], kwargs: dict, repeats: int) -> list[list]:
    model = build(name)
    plain, traced = case(model, lengths, kwargs)
    classes = {
        type(m) for m in model.modules()
        if type(m).__module__.startswith("transformers.models.")
        and type(m).__name__.endswith(("Attention", "DecoderLayer"))
    }  # fmt: skip
    spent: dict[tuple[str, str], list[float]] = {}
    which = ["plain"]
    saved = {cls: cls.__dict__.get("__call__") for cls in classes}

    def timed_call(original: Callable) -> Callable:
        def call(module, *args, **kw):
            start = time.perf_counter()
            out = original(module, *args, **kw)
            key = (type(module).__name__, which[0])
            spent.setdefault(key, []).append(time.perf_counter() - start)
            return out

        return call

    for cls in classes:
        cls.__call__ = timed_call(cls.__call__)
    whole: dict[str, list[float]] = {"plain": [], "signals": []}
    try:
        for _ in range(repeats):
            for label, fn in (("plain", plain), ("signals", traced)):
                which[0] = label
                start = time.perf_counter()
                fn()
                whole[label].append(time.perf_counter() - start)
    finally:
        for cls, own in saved.items():
            if own is None:
                del cls.__call__
            else:
                cls.__call__ = own
    rows = []
    for cls in sorted(classes, key=lambda c: c.__name__):
        a = statistics.median(spent[cls.__name__, "plain"]) * 1e6
        b = statistics.median(spent[cls.__name__, "signals"]) * 1e6
        calls = len(spent[cls.__name__, "plain"]) // repeats
        rows.append([name, cls.__name__, calls, f"{a:.1f}", f"{b:.1f}", f"{b - a:+.1f}"])
    a, b = (statistics.median(whole[k]) * 1e3 for k in ("plain", "signals"))
    rows.append([name, "whole generation (ms)", 1, f"{a:.1f}", f"{b:.1f}", f"{b - a:+.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["small", "base", "bart"])
    parser.add_argument("--prompts", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 112, 96, 80])
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--profile", action="store_true",
        help="time each attention module and decoder layer call instead (first prompt length)",
    )  # fmt: skip
    args = parser.parse_args()
    device = torch.device(args.device)
    kwargs = {"max_new_tokens": args.new, "min_new_tokens": args.new, "do_sample": False}
    if args.profile:
        profile(args.models, args.prompts[:1], kwargs, args.repeats)
        return
    lengths_cases = [[length] for length in args.prompts] + [args.batch]
    cases = [(name, lengths) for name in args.models for lengths in lengths_cases]
    rows, records = [], []
    models = {}
    with Progress(transient=True) as progress:
        task = progress.add_task("measuring", total=len(cases))
        for name, lengths in cases:
            if name not in models:
                models.clear()
                models[name] = build(name).to(device)
            model = models[name]
            plain, traced = case(model, lengths, kwargs)
            plain_times, traced_times = interleaved([plain, traced], args.repeats, warmup=1)
            ratio = sorted(t / p for t, p in zip(traced_times, plain_times, strict=True))
            quartiles = (ratio[len(ratio) // 4], ratio[(3 * len(ratio)) // 4])
            record = {
                "model": name,
                "prompt": lengths,
                "batch": len(lengths),
                "new_tokens": args.new,
                "plain_ms": 1e3 * sorted(plain_times)[len(plain_times) // 2],
                "signals_ms": 1e3 * sorted(traced_times)[len(traced_times) // 2],
                "ratio": ratio[len(ratio) // 2],
                "ratio_quartiles": list(quartiles),
            }
            records.append(record)
            rows.append(
                [
                    name,
                    " / ".join(map(str, lengths)),
                    len(lengths),
                    args.new,
                    f"{record['plain_ms']:.0f}",
                    f"{record['signals_ms']:.0f}",
                    f"{record['ratio']:.2f}x ({quartiles[0]:.2f} to {quartiles[1]:.2f})",
                ]
            )
            progress.advance(task)
    info = machine()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    title = (
        "Greedy generation with attention signals (lookback ratio, entropy, sink, max, argmax "
        "for all layers and heads; for bart, of the decoder's cross-attention); small: Llama "
        "4 layers, hidden 256; base: Llama 12 layers, hidden 768, 12 heads, 4 KV heads; bart: "
        f"4 + 4 layers, hidden 256; {info.get('gpu', info['cpu'])}, {info['threads']} threads, "
        f"torch {info['torch']}, {args.repeats} interleaved rounds; {info['date']}"
    )
    headers = [
        "model", "prompt tokens", "batch", "new tokens", "plain ms", "with signals ms",
        "ratio (quartiles)",
    ]  # fmt: skip
    table = title + "\n\n" + markdown_table(headers, rows)
    print(table)
    name = "llm" if device.type == "cpu" else "llm_gpu"
    print(f"\nwrote {write_results(name, {'machine': info, 'rows': records}, table)}")


if __name__ == "__main__":
    main()
