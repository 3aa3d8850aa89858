"""The evidence-task experiment: verdicts trust attention that shows the evidence and flag
attention that was trained away from it (benchmarks/faithfulness.py, run small)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "faithfulness.py"


@pytest.mark.slow
def test_verdicts_flag_decoupled_attention(tmp_path):
    out = tmp_path / "faithfulness.json"
    args = ["--steps", "300", "--examples", "100", "--no-classic", "--json", str(out)]
    subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=True,
        capture_output=True,
        timeout=600,
    )
    results = json.loads(out.read_text())["results"]
    normal, decoupled = results["normal"], results["decoupled"]
    assert normal["accuracy"] > 0.95 and decoupled["accuracy"] > 0.95
    verdicts = {
        m: {c: {v["method"]: v for v in vs} for c, vs in r["verdicts"].items()}
        for m, r in results.items()
    }
    trusted = {m: {k: v["trusted"] for k, v in c["magnitude"].items()} for m, c in verdicts.items()}
    found = {m: r["evidence_found"] for m, r in results.items()}
    # the normal model's attention shows the evidence, and is trusted
    assert (
        found["normal"]["last-layer attention"] > 0.9 and trusted["normal"]["last-layer attention"]
    )
    # the decoupled model decides as well, but its attention looks elsewhere: flagged, with an
    # interval of the gain wholly below 50%, under both conventions
    assert found["decoupled"]["last-layer attention"] < 0.1
    for convention in ("magnitude", "signed"):
        for method in ("last-layer attention", "rollout"):
            verdict = verdicts["decoupled"][convention][method]
            assert verdict["label"] == "do not" and verdict["gain_interval"][1] < 0.5
            assert verdict["n"] == 100
    # integrated gradients and leave-one-out still find the evidence; relevance mostly does
    assert found["decoupled"]["integrated gradients"] > 0.9
    assert trusted["decoupled"]["integrated gradients"] and trusted["decoupled"]["relevance"]
    assert found["decoupled"]["relevance"] > 0.5
    assert found["decoupled"]["leave-one-out"] > 0.9
