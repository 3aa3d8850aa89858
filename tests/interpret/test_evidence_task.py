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
    subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "300", "--examples", "100", "--json", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    results = json.loads(out.read_text())["results"]
    normal, decoupled = results["normal"], results["decoupled"]
    assert normal["accuracy"] > 0.95 and decoupled["accuracy"] > 0.95
    trusted = {m: {v["method"]: v["trusted"] for v in r["verdicts"]} for m, r in results.items()}
    found = {m: r["evidence_found"] for m, r in results.items()}
    # the normal model's attention shows the evidence, and is trusted
    assert (
        found["normal"]["last-layer attention"] > 0.9 and trusted["normal"]["last-layer attention"]
    )
    # the decoupled model decides as well, but its attention looks elsewhere: flagged
    assert found["decoupled"]["last-layer attention"] < 0.1
    assert not trusted["decoupled"]["last-layer attention"] and not trusted["decoupled"]["rollout"]
    # integrated gradients and leave-one-out still find the evidence; relevance mostly does
    assert found["decoupled"]["integrated gradients"] > 0.9
    assert trusted["decoupled"]["integrated gradients"] and trusted["decoupled"]["relevance"]
    assert found["decoupled"]["relevance"] > 0.5
    assert found["decoupled"]["leave-one-out"] > 0.9
