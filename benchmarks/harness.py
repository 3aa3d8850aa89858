"""Measuring side by side: interleaved timing, machine description, results as markdown + JSON.

Every benchmark compares attnkit with a reference in the same process, on the same inputs,
interleaved (A, B, A, B, ... after a warm-up), and reports the median of the per-pair ratios so
that a noisy machine does not bias the comparison. Absolute times are for context only.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    """CPU model, cores, torch version and threads of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def interleaved(
    fns: Sequence[Callable[[], object]], repeats: int, warmup: int = 2
) -> list[list[float]]:
    """Seconds per call of each function, measured in rotating order round after round.

    Returns one list of ``repeats`` timings per function; round ``r`` of every function ran
    back to back, so ratios within a round see the same machine state.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = list(range(len(fns)))
        order = order[r % len(order) :] + order[: r % len(order)]  # rotate who goes first
        for i in order:
            start = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - start)
    return times


def median_ratio(reference: Sequence[float], candidate: Sequence[float]) -> float:
    """Median over rounds of ``reference / candidate``: > 1 means the candidate is faster."""
    return statistics.median(r / c for r, c in zip(reference, candidate, strict=True))


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """This machine's fp32 matrix-multiply speed in GFLOP/s (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def resident_mib() -> float:
    """This process's resident memory now, in MiB."""
    return _status_kib("VmRSS") / 1024


def peak_resident_mib() -> float:
    """This process's peak resident memory, in MiB.

    Read from ``VmHWM``, which starts afresh in a new program; ``getrusage``'s ``ru_maxrss`` would
    carry over the high-water mark of the parent that forked it.
    """
    return _status_kib("VmHWM") / 1024


def tensor_peak_mib(fn: Callable[[], object]) -> float:
    """The most tensor memory ``fn`` holds at once beyond what was held before it, in MiB.

    Summed in order from the PyTorch profiler's allocation events (``profile_memory=True``):
    every tensor allocated and freed on the CPU, by any thread of the call. Unlike the process's
    resident size it is exact and the same from run to run (no malloc arenas, thread stacks or
    pages kept by the allocator); it sees tensors only, not a kernel's own scratch buffers.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == DeviceType.CPU
    )
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak / 2**20


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, object], table: str) -> Path:
    """Write ``results/<name>.json`` and ``results/<name>.md``; return the JSON path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    return path


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]  # fmt: skip  (as tests/interpret/test_report_browser.py: no network, no first-run work)


def screenshot(page: Path, png: Path, profile: Path, size: tuple[int, int] = (1280, 1600)) -> float:
    """Load ``page`` in Debian's headless Chromium and save a ``size`` screenshot to ``png``.

    Returns the seconds it took (Chromium's start included). ``profile`` is the user-data
    directory (reuse one to keep its creation out of later timings). Raises ``FileNotFoundError``
    when ``chromium`` is not installed.
    """
    chromium = shutil.which("chromium")
    if chromium is None:
        raise FileNotFoundError("chromium is not installed (Debian package chromium)")
    start = time.perf_counter()
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--window-size={size[0]},{size[1]}",
         f"--user-data-dir={profile}", f"--screenshot={png}", page.resolve().as_uri()],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return time.perf_counter() - start
