"""``attnkit eval``: JSON and HTML written, exit code 1 exactly when a check FAILs."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from attnkit.cli import app
from attnkit.llm.lookback_lens import LookbackLens

transformers = pytest.importorskip("transformers")

ROWS = [
    {"id": "a", "prompt": "context: the sky is blue. question: what colour is the sky?",
     "context": "the sky is blue."},
    {"id": "b", "prompt": "context: cats sleep. question: who sleeps?", "context": [2, 5]},
]  # fmt: skip


def prompts(tmp_path, rows):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def run(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def text(output: str) -> str:
    """The output with rich's box drawing and line wrapping undone."""
    return "".join(output.replace("│", " ").split())


def test_eval_writes_the_result_and_exits_by_status(model_dir, tmp_path):
    out = tmp_path / "passing"
    passing = run(prompts(tmp_path, ROWS), "--model", model_dir, "--out", out,
                  "--max-new-tokens", 3)  # fmt: skip
    assert passing.exit_code == 0, passing.output
    result = json.loads((out / "eval.json").read_text())
    assert result["status"] in ("PASS", "WARN")
    assert [e["new_tokens"] for e in result["examples"]] == [3, 3]
    assert "mean lookback ratio" in passing.output and str(out / "eval.html") in passing.output
    assert (out / "eval.html").read_text().startswith("<!doctype html>")

    # an expected answer the random model cannot give: the check FAILs, exit code 1
    rows = [{**ROWS[0], "expected": "the answer is definitely blue"}, ROWS[1]]
    out = tmp_path / "failing"
    failing = run(prompts(tmp_path, rows), "--model", model_dir, "--out", out,
                  "--max-new-tokens", 3)  # fmt: skip
    assert failing.exit_code == 1, failing.output
    result = json.loads((out / "eval.json").read_text())
    assert result["status"] == "FAIL"
    [expected] = [c for c in result["checks"] if c["name"] == "expected answer"]
    assert expected["status"] == "FAIL" and expected["failing"] == 1.0


def test_eval_with_a_detector(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    features = rng.uniform(size=(20, 8))  # 2 layers x 4 heads
    detector = LookbackLens().fit(features, [0, 1] * 10).save(tmp_path / "detector.json")
    out = tmp_path / "out"
    done = run(prompts(tmp_path, ROWS), "--model", model_dir, "--out", out,
               "--detector", detector, "--max-new-tokens", 2)  # fmt: skip
    assert done.exit_code in (0, 1), done.output
    result = json.loads((out / "eval.json").read_text())
    [score] = [c for c in result["checks"] if c["name"] == "detector score"]
    assert all(0 <= o["value"] <= 1 for o in score["outcomes"])
    assert done.exit_code == int(result["status"] == "FAIL")


def test_eval_bad_input(model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    done = run(bad, "--model", model_dir, "--out", tmp_path / "out")
    assert done.exit_code == 2 and "line2:notvalidJSON" in text(done.output)
    assert not (tmp_path / "out").exists()
    missing = run(tmp_path / "nowhere.jsonl", "--model", model_dir)
    assert missing.exit_code == 2 and "nowhere.jsonl" in text(missing.output)


def test_eval_with_a_named_detector(model_dir, tmp_path, fitted_detector):
    detector = fitted_detector("redeep").save(tmp_path / "redeep.json")
    out = tmp_path / "out"
    done = run(prompts(tmp_path, ROWS), "--model", model_dir, "--out", out,
               "--detector", detector, "--max-new-tokens", 2)  # fmt: skip
    assert done.exit_code in (0, 1), done.output
    result = json.loads((out / "eval.json").read_text())
    [score] = [c for c in result["checks"] if c["name"] == "redeep score"]
    assert all(0 <= o["value"] <= 1 for o in score["outcomes"])
    assert "test evidence" in score["condition"]
    assert result["settings"]["detector"] == "redeep"
