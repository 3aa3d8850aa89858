import json

import pytest
from toy import toy_recipe
from typer.testing import CliRunner

from attnkit import tasks
from attnkit.cli import app
from attnkit.train.checkpoint import load_checkpoint

runner = CliRunner()


@pytest.fixture
def toy_task(monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "toy", toy_recipe)


def test_train_runs_end_to_end_and_resumes(tmp_path, toy_task):
    out = tmp_path / "run"
    args = [
        "train",
        "toy",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--lr",
        "0.01",
        "--out",
        str(out),
    ]
    done = runner.invoke(app, [*args, "-o", "hidden=8", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "toy, attention=soft, 21 steps" in done.output  # 200 examples / 32 -> 7 per epoch
    assert f"metrics: {out / 'metrics.json'}" in done.output.replace("\n", "")
    saved = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in saved["history"]] == [1, 2, 3]
    assert saved["test"]["accuracy"] > 0.8
    assert load_checkpoint(out / "checkpoint").weights["0.weight"].shape == (8, 4)

    more = runner.invoke(
        app,
        [
            "train",
            "toy",
            "--epochs",
            "5",
            "--out",
            str(out),
            "--resume",
            "--batch-size",
            "32",
            "--lr",
            "0.01",
            "-o",
            "hidden=8",
        ],
    )
    assert more.exit_code == 0, more.output
    saved = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in saved["history"]] == [1, 2, 3, 4, 5]
    assert saved["steps"] == 35


def test_unknown_task_lists_the_known_ones():
    done = runner.invoke(app, ["train", "nope"])
    assert done.exit_code != 0
    for task in ("text", "dates", "digits", "co2", "taylor"):
        assert task in done.output


def test_unsupported_attention_and_missing_checkpoint_are_clear(tmp_path, toy_task):
    done = runner.invoke(app, ["train", "toy", "--attention", "hard", "--out", str(tmp_path)])
    assert done.exit_code != 0 and "['none', 'soft']" in done.output
    done = runner.invoke(app, ["train", "toy", "--resume", "--out", str(tmp_path / "empty")])
    assert done.exit_code != 0 and "--resume needs a checkpoint" in done.output


def test_options_parse_as_json_or_text():
    assert tasks.parse_options(["dropout=0.1", "hidden=64", "column=value", "flag=true"]) == {
        "dropout": 0.1,
        "hidden": 64,
        "column": "value",
        "flag": True,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        tasks.parse_options(["dropout"])


@pytest.mark.slow
def test_a_real_task_trains_from_the_cli(tmp_path):
    done = runner.invoke(
        app, ["train", "co2", "--epochs", "2", "--out", str(tmp_path), "--no-progress"]
    )
    assert done.exit_code == 0, done.output
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]


@pytest.mark.slow
def test_a_trained_text_model_is_explained_from_its_run_directory(tmp_path):
    pytest.importorskip("captum")
    run = tmp_path / "run"
    args = ["train", "text", "--epochs", "1", "--max-steps", "5", "--out", str(run)]
    options = ["-o", "n=200", "-o", "length=12", "-o", "fillers=20", "-o", "classes=2"]
    done = runner.invoke(app, [*args, *options, "--no-progress"])
    assert done.exit_code == 0, done.output
    vocabulary = json.loads((run / "vocabulary.json").read_text())
    assert vocabulary["tokens"][:2] == ["<pad>", "<unk>"] and vocabulary["classes"] == ["0", "1"]

    report, figures = tmp_path / "report.html", tmp_path / "figures"
    text = "filler3 class1_word0 filler7 filler2"
    explained = runner.invoke(
        app, ["explain", str(run), text, "--out", str(report), "--figures", str(figures)]
    )
    assert explained.exit_code == 0, explained.output
    assert "leave-one-out" in explained.output
    # one text: the CLI says what the verdicts are pooled over, and gives none
    output = " ".join(explained.output.split())
    assert "pooled over n=1 text(s)" in output and "no verdict (too few examples: n=1)" in output
    assert "This text alone (example 0, n=1)" in report.read_text()
    assert "class1_word0" in report.read_text()
    pngs, svgs = sorted(figures.glob("*.png")), sorted(figures.glob("*.svg"))
    assert pngs and [p.stem for p in pngs] == [p.stem for p in svgs]


def _reviews(path, split=True):
    rows = []
    for i in range(60):
        label = i % 2
        word = ("great", "fine", "lovely")[i % 3] if label else ("awful", "dull", "poor")[i % 3]
        row = {"text": f"the film was {word} today", "label": "pos" if label else "neg"}
        if split:
            row["split"] = "test" if i >= 50 else "dev" if i >= 42 else "train"
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_text_files_from_the_cli_split_column_no_test_split_and_epoch_lines(tmp_path):
    data = _reviews(tmp_path / "reviews.jsonl")
    out = tmp_path / "run"
    args = ["train", "text", "--data", str(data), "--epochs", "2", "--out", str(out)]
    done = runner.invoke(app, [*args, "--seed", "3", "-o", "hidden=8", "--no-progress"])
    assert done.exit_code == 0, done.output
    lines = [line for line in done.output.splitlines() if line.startswith("epoch ")]
    assert [line.split(",")[0] for line in lines] == ["epoch 1", "epoch 2"]
    assert "val_accuracy" in lines[0]
    saved = json.loads((out / "metrics.json").read_text())
    assert "test" in done.output and saved["test"] is not None
    record = json.loads((out / "data.json").read_text())
    assert record == {"path": str(data), "seed": 3, "options": {}}

    # no split column and -o test_fraction=0: trains, and there is no test row
    plain = _reviews(tmp_path / "plain.jsonl", split=False)
    out = tmp_path / "no-test"
    args = ["train", "text", "--data", str(plain), "--epochs", "1", "--out", str(out)]
    done = runner.invoke(app, [*args, "-o", "test_fraction=0", "-o", "hidden=8", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "metrics.json").read_text())["test"] is None
    assert json.loads((out / "data.json").read_text())["options"] == {"test_fraction": 0}

    wrong = runner.invoke(app, ["train", "text", "--data", str(plain), "-o", "text_column=body"])
    assert wrong.exit_code != 0 and "-o text_column=NAME" in wrong.output
