"""`attnkit faithfulness RUN --data FILE`: Jain & Wallace's protocol on a run's test split.

Oracles: scipy's ``kendalltau`` on the methods' scores computed independently (the model's own
pooling weights, leave-one-out by deleting each word), and the file's own split.
"""

import json
import random

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau
from typer.testing import CliRunner

from attnkit.cli import app
from attnkit.data.text import read_text_splits

pytest.importorskip("safetensors")
runner = CliRunner()


def _reviews(path):
    rng = random.Random(0)
    rows = []
    for i in range(160):
        label = i % 2
        words = [f"w{rng.randrange(30)}" for _ in range(rng.randint(4, 9))]
        words.insert(
            rng.randrange(len(words) + 1),
            rng.choice(("good", "fine") if label else ("bad", "poor")),
        )
        split = "test" if i >= 136 else "dev" if i >= 120 else "train"
        rows.append(
            {"text": " ".join(words), "label": "pos" if label else "neg", "exp_split": split}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_faithfulness_command_replicates_the_protocol_on_the_test_split(tmp_path):
    data = _reviews(tmp_path / "reviews.jsonl")
    run = tmp_path / "run"
    args = [
        "train",
        "text",
        "--data",
        str(data),
        "--epochs",
        "3",
        "--lr",
        "0.01",
        "--out",
        str(run),
    ]
    trained = runner.invoke(app, [*args, "-o", "hidden=8", "-o", "embed_dim=8", "--no-progress"])
    assert trained.exit_code == 0, trained.output
    done = runner.invoke(app, ["faithfulness", str(run), "--data", str(data), "--limit", "20"])
    assert done.exit_code == 0, done.output
    assert "attention pooling vs leave-one-out" in done.output and "n=20" in done.output
    for suffix in ("md", "json", "png"):
        assert (run / f"faithfulness.{suffix}").is_file()
    saved = json.loads((run / "faithfulness.json").read_text())
    assert saved["n"] == 20 and set(saved["verdicts"]) == {"magnitude", "signed"}
    assert all(v["n"] == 20 for v in saved["verdicts"]["magnitude"])

    # the same τ from scratch: the run's model, its pooling weights, words deleted one at a time
    from attnkit.interpret.loading import load_explainable

    target = load_explainable(str(run))
    model = target.model
    texts = read_text_splits(data).texts["test"][:20]
    taus = {"magnitude": [], "signed": []}
    for text in texts:
        ids, _, _ = target.tokenizer([text])
        with torch.no_grad():
            result = model(ids)
            predicted = int(result.logits.argmax(-1))
            full = result.logits.softmax(-1)[0, predicted]
            drops = [
                float(
                    full
                    - model(torch.cat([ids[:, :i], ids[:, i + 1 :]], 1)).logits.softmax(-1)[
                        0, predicted
                    ]
                )
                for i in range(ids.shape[1])
            ]
        weights = result.weights[0].numpy()
        taus["magnitude"].append(kendalltau(weights, np.abs(drops)).statistic)
        taus["signed"].append(kendalltau(weights, drops).statistic)
    for convention, expected in taus.items():
        (pair,) = [
            p for p in saved["pairs"]
            if p["first"] == "attention pooling" and p["second"] == "leave-one-out"
            and p["convention"] == convention
        ]  # fmt: skip
        assert pair["mean"] == pytest.approx(np.nanmean(expected), abs=1e-5)
        assert pair["sd"] == pytest.approx(np.nanstd(expected, ddof=1), abs=1e-5)
        assert pair["interval"][0] <= pair["mean"] <= pair["interval"][1]

    empty = runner.invoke(
        app, ["faithfulness", str(run), "--data", str(data), "-o", "split_column=nope"]
    )
    assert empty.exit_code != 0 and "split column 'nope' not found" in empty.output
