"""Attention vs the same model without it, on every task: runs the per-domain benchmarks and
merges their tables.

Runs ``benefit_text.py``, ``benefit_vision.py`` and ``benefit_series.py`` (those that exist),
one after another in child processes, then merges ``results/benefit_<domain>.{json,md}`` into
``results/benefit.{json,md}``. Each domain script trains attention models and their baselines
under the same parameter and step budget over several seeds (see its own docstring).

    flock /tmp/attnkit-heavy.lock python benchmarks/benefit.py            # run and merge
    python benchmarks/benefit.py --merge-only                             # merge what is there
    python benchmarks/benefit.py --only vision -- --fast                  # args after -- go on
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import RESULTS, machine

HERE = Path(__file__).parent
DOMAINS = ("text", "vision", "series")


def run_domain(domain: str, extra: list[str]) -> dict[str, object]:
    """Run ``benefit_<domain>.py``; return its status, exit code and wall time."""
    script = HERE / f"benefit_{domain}.py"
    if not script.is_file():
        return {"status": "missing", "script": script.name}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), *extra], cwd=HERE.parent, check=False)
    seconds = round(time.perf_counter() - started, 1)
    status = "ok" if done.returncode == 0 else "failed"
    return {
        "status": status,
        "script": script.name,
        "returncode": done.returncode,
        "seconds": seconds,
    }


def _demote(markdown: str) -> str:
    """Headings two levels down, under the merged file's ``## <domain>``."""
    lines = markdown.splitlines()
    return "\n".join("##" + line if line.startswith("#") else line for line in lines)


def merge(runs: dict[str, dict[str, object]]) -> tuple[dict[str, object], str]:
    """The merged JSON payload and markdown of every domain's results."""
    payload: dict[str, object] = {"machine": machine(), "runs": runs, "domains": {}}
    sections = [
        "# Attention vs baselines (same parameter and step budget)",
        "",
        "Merged from the per-domain benchmarks by `benchmarks/benefit.py`"
        + (
            "; each domain's script ran here just before."
            if runs
            else " (`--merge-only`: the results each domain script last wrote)."
        ),
    ]
    for domain in DOMAINS:
        json_path, md_path = RESULTS / f"benefit_{domain}.json", RESULTS / f"benefit_{domain}.md"
        sections += ["", f"## {domain}", ""]
        if not json_path.is_file():
            note = runs.get(domain, {}).get("status", "not run")
            sections.append(f"No results (benchmarks/benefit_{domain}.py: {note}).")
            continue
        payload["domains"][domain] = json.loads(json_path.read_text())  # type: ignore[index]
        table = md_path.read_text().strip() if md_path.is_file() else "(no markdown table)"
        sections.append(_demote(table))
    return payload, "\n".join(sections) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merge-only", action="store_true", help="merge existing results")
    parser.add_argument("--only", choices=DOMAINS, action="append", help="run these domains")
    parser.add_argument("extra", nargs="*", help="arguments passed on to each domain script")
    args = parser.parse_args()
    runs: dict[str, dict[str, object]] = {}
    if not args.merge_only:
        for domain in args.only or DOMAINS:
            runs[domain] = run_domain(domain, args.extra)
            print(f"{domain}: {runs[domain]}", flush=True)
    payload, table = merge(runs)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "benefit.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "benefit.md").write_text(table)
    print(table)
    if any(run["status"] == "failed" for run in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
