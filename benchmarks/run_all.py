"""Every benchmark, one report: runs the scripts in ``benchmarks/`` and writes ``RESULTS.md``.

Each script measures attnkit against its reference side by side and writes
``results/<name>.{md,json}``; this one runs them one after another in child processes, then
gathers their tables into ``benchmarks/RESULTS.md`` with the machine description and the date
(of this run, and of each table, which carries its own), and draws how time and memory scale
with sequence length (``results/scaling.png``) from the mechanism, long-input and capture
benchmarks.

The speed benchmarks take minutes; the trained-model ones (``--heavy``) take about an hour and
a half on 2 cores. ``--collect`` runs nothing and rebuilds the report from the results there.

    python benchmarks/run_all.py                     # the speed benchmarks, then the report
    flock /tmp/attnkit-heavy.lock python benchmarks/run_all.py --heavy   # every benchmark
    python benchmarks/run_all.py --only capture llm  # these, then the report
    python benchmarks/run_all.py --collect           # the report from the results there
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import RESULTS, machine, markdown_table

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Benchmark:
    """One script and the results files it writes."""

    name: str  # results/<name>.{md,json}; the script is <name>.py unless ``script`` says
    title: str
    heavy: bool  # trains models: minutes to tens of minutes
    script: str = ""
    more: tuple[str, ...] = ()  # other results/<name>.md the script writes, shown after its own

    @property
    def path(self) -> Path:
        return HERE / (self.script or f"{self.name}.py")


BENCHMARKS = (
    Benchmark("mechanisms", "MultiHeadAttention vs SDPA and nn.MultiheadAttention", False),
    Benchmark(
        "long_inputs",
        "Long inputs: linear attention vs SDPA; capture at 16k and 32k tokens",
        False,
        more=("long_capture",),
    ),
    Benchmark("capture", "The cost of seeing attention: capture vs sdpa and eager", False),
    Benchmark("llm", "Generation with attention signals vs plain generate()", False),
    Benchmark("interpret_speed", "Interpretability speed: rollout, flow, report", False),
    Benchmark("attribution_inseq", "Attribution of generated tokens vs inseq", False),
    Benchmark("hard_attention", "Hard attention on cluttered MNIST", True),
    Benchmark("benefit", "Attention vs baselines: text, images, time series", True),
    Benchmark("overfitting", "Overfitting on 5% of the data, and the controls", True),
    Benchmark("faithfulness", "Faithfulness verdicts on the evidence task", True),
    Benchmark("minilm", "Explanations on all-MiniLM-L6-v2 with a trained head", True),
    Benchmark("testbed", "Lookback Lens on the retrieval testbed", True),
    Benchmark("hallucination", "Hallucination detectors on two testbeds", True),
    Benchmark("monitor", "Monitor: HTTP ingest and dashboard latency", True),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


def run(benchmark: Benchmark) -> dict[str, object]:
    """Run one benchmark script in a child process; its status, exit code and wall time."""
    if not benchmark.path.is_file():
        return {"status": "missing", "seconds": 0.0}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(benchmark.path)], cwd=HERE.parent, check=False)
    seconds = round(time.perf_counter() - started, 1)
    return {
        "status": "ok" if done.returncode == 0 else "failed",
        "returncode": done.returncode,
        "seconds": seconds,
    }


def _demote(markdown: str, levels: int = 2) -> str:
    """Headings ``levels`` down, so that a table's own headings nest under its section."""
    prefix = "#" * levels
    return "\n".join(
        prefix + line if line.startswith("#") else line for line in markdown.split("\n")
    )


def _measured(results: Path, name: str) -> str:
    """When and where a benchmark's results were measured, from its JSON."""
    path = results / f"{name}.json"
    if not path.is_file():
        return ""
    about = json.loads(path.read_text()).get("machine") or {}
    if not about:
        return ""
    parts = [str(about.get(key)) for key in ("date", "cpu") if about.get(key)]
    if about.get("threads"):
        parts.append(f"{about['threads']} threads")
    if about.get("torch"):
        parts.append(f"torch {about['torch']}")
    return "Measured " + ", ".join(parts) + "."


def report(
    results: Path, runs: dict[str, dict[str, object]], figure: Path | None, about: dict
) -> str:
    """The markdown of ``RESULTS.md``: machine, date, every table, the scaling figure."""
    rows = []
    for b in BENCHMARKS:
        present = (results / f"{b.name}.md").is_file()
        run_note = runs.get(b.name)
        status = (
            f"{run_note['status']} ({run_note['seconds']} s)"
            if run_note
            else ("from earlier run" if present else "no results")
        )
        rows.append([f"[{b.title}](#{b.name})", f"`{b.path.name}`", status])
    lines = [
        "# attnkit benchmark results",
        "",
        f"Written by `benchmarks/run_all.py` on {about['date']}: {about['cpu']}, "
        f"{about['cores']} cores, torch {about['torch']}, {about['threads']} threads, "
        f"Python {about['python']}. Each table below names the run it comes from; tables that "
        "were not re-run now keep their own date and machine.",
        "",
        "Every script compares attnkit with its reference in one process, on the same inputs, "
        "interleaved, and reports medians of per-round ratios; absolute times are for context.",
        "",
        markdown_table(["benchmark", "script", "this run"], rows),
    ]
    if figure is not None:
        lines += [
            "",
            "## Scaling with sequence length",
            "",
            f"![time and memory against sequence length]({figure.relative_to(results.parent)})",
            "",
            "Top: forward time; bottom: the peak memory the forward adds. Columns: the "
            "attention module against SDPA and nn.MultiheadAttention (mechanisms), linear "
            "attention against SDPA (long_inputs), a 4-layer Llama forward plain, with "
            "attnkit's streamed statistics and with eager weights (capture).",
        ]
    for b in BENCHMARKS:
        md = results / f"{b.name}.md"
        lines += ["", f'<a id="{b.name}"></a>', "", f"## {b.title}", ""]
        if not md.is_file():
            lines.append(f"No results yet: run `python benchmarks/{b.path.name}`.")
            continue
        measured = _measured(results, b.name)
        if measured:
            lines += [measured, ""]
        lines.append(_demote(md.read_text().strip()))
        for name in b.more:
            if (results / f"{name}.md").is_file():
                lines += ["", _demote((results / f"{name}.md").read_text().strip())]
    return "\n".join(lines) + "\n"


GROUPS = {
    "mechanisms": "attention module (E = 512, 8 heads)",
    "long_inputs": "attention op: linear vs SDPA",
    "capture": "4-layer Llama forward",
}


def _series(results: Path) -> dict[str, dict[str, dict[str, tuple[list[int], list[float]]]]]:
    """``{group: {"time" | "memory": {curve: (lengths, values)}}}`` from the speed results.

    Time is the forward in ms; memory is the peak the run adds, in MiB.
    """
    series: dict[str, dict[str, dict[str, tuple[list[int], list[float]]]]] = {}

    def add(group, kind, label, x, y):
        curves = series.setdefault(group, {"time": {}, "memory": {}})[kind]
        xs, ys = curves.setdefault(label, ([], []))
        xs.append(x)
        ys.append(y)

    def load(name):
        path = results / f"{name}.json"
        return json.loads(path.read_text()).get("rows", []) if path.is_file() else []

    for row in load("mechanisms"):
        if row.get("pass") != "fwd":
            continue
        n, peak = row["length"], row.get("peak_mib", {})
        add("mechanisms", "time", "attnkit", n, row["attnkit_ms"])
        add("mechanisms", "time", "SDPA module", n, row["plain_sdpa_ms"])
        add("mechanisms", "time", "nn.MultiheadAttention", n, row["torch_mha_ms"])
        add("mechanisms", "memory", "attnkit", n, peak.get("attnkit"))
        add("mechanisms", "memory", "SDPA module", n, peak.get("plain_sdpa"))
        add("mechanisms", "memory", "nn.MultiheadAttention", n, peak.get("torch_mha"))
        add("mechanisms", "memory", "attnkit + weights", n, peak.get("attnkit_weights"))
    for row in load("long_inputs"):
        n, kind = row["length"], "causal" if row["causal"] else "full"
        add("long_inputs", "time", f"SDPA ({kind})", n, row["sdpa_ms"])
        add("long_inputs", "time", f"linear ({kind})", n, row["linear_ms"])
        add("long_inputs", "memory", f"SDPA ({kind})", n, row["sdpa_peak_mib"])
        add("long_inputs", "memory", f"linear ({kind})", n, row["linear_peak_mib"])
    for row in load("capture"):
        n, plain, added = row["length"], row["plain_ms"], row.get("forward_added_mib", {})
        add("capture", "time", "sdpa", n, plain)
        add("capture", "time", "attnkit capture (stats)", n, plain * row["capture_ratio"])
        add("capture", "time", "eager + weights", n, plain * row["eager_ratio"])
        add("capture", "memory", "sdpa", n, added.get("plain"))
        add("capture", "memory", "attnkit capture (stats)", n, added.get("capture"))
        add("capture", "memory", "eager + weights", n, added.get("eager"))
    return series


def plot_scaling(results: Path) -> Path | None:
    """Draw ``results/scaling.png``: time and memory vs length per benchmark; None without any."""
    series = _series(results)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in GROUPS if g in series]
    figure, axes = plt.subplots(2, len(groups), figsize=(4.5 * len(groups), 7), squeeze=False)
    for column, group in enumerate(groups):
        for row, (kind, label) in enumerate(
            (("time", "forward time (ms)"), ("memory", "peak memory added (MiB)"))
        ):
            axis = axes[row][column]
            for name, (xs, ys) in series[group][kind].items():
                points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and y > 0]
                if points:
                    axis.plot(*zip(*points, strict=True), marker="o", label=name)
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel("sequence length (tokens)")
            axis.set_ylabel(label)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=7)
        axes[0][column].set_title(GROUPS[group], fontsize=10)
    figure.suptitle("attnkit: scaling with sequence length (log-log)")
    figure.tight_layout()
    path = results / "scaling.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def select(only: Sequence[str] | None, heavy: bool) -> list[Benchmark]:
    """The benchmarks to run: those named, else the speed ones (and the heavy ones if asked)."""
    if only:
        unknown = sorted(set(only) - set(BY_NAME))
        if unknown:
            raise SystemExit(
                f"unknown benchmark(s) {', '.join(unknown)}; expected one of {', '.join(BY_NAME)}"
            )
        return [BY_NAME[name] for name in only]
    return [b for b in BENCHMARKS if heavy or not b.heavy]


def write(results: Path, runs: dict[str, dict[str, object]], out: Path) -> Path:
    """Draw the figure and write the report to ``out``; return ``out``."""
    figure = plot_scaling(results)
    out.write_text(report(results, runs, figure, machine()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heavy", action="store_true", help="the trained-model benchmarks too")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"of: {', '.join(BY_NAME)}")
    parser.add_argument("--collect", action="store_true", help="run nothing; rebuild the report")
    args = parser.parse_args()
    runs: dict[str, dict[str, object]] = {}
    if not args.collect:
        for benchmark in select(args.only, args.heavy):
            print(f"== {benchmark.name}", flush=True)
            runs[benchmark.name] = run(benchmark)
            print(f"== {benchmark.name}: {runs[benchmark.name]}", flush=True)
    out = write(RESULTS, runs, HERE / "RESULTS.md")
    print(f"wrote {out}")
    if any(r["status"] == "failed" for r in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
