"""``attnkit explain`` on a causal LM: the answer's tokens attributed to the prompt, verdicts
printed with n and intervals, the report written; clear errors for what it cannot take."""

import pytest
from typer.testing import CliRunner

from attnkit.cli import app
from attnkit.llm.attribution import attribute, load_generator

pytest.importorskip("transformers")
pytest.importorskip("captum")

PROMPT = "context: the sky is blue. grass is green. question: what colour is the sky?"


def run(*args):
    return CliRunner().invoke(app, ["explain", *map(str, args)], terminal_width=400)


@pytest.mark.slow
def test_explain_attributes_a_given_answer(model_dir, tmp_path):
    out = tmp_path / "answer.html"
    context = "the sky is blue. grass is green."
    done = run(model_dir, PROMPT, "--answer", " blue sky", "--context", context, "--out", out)
    assert done.exit_code == 0, done.output
    model, tokenizer = load_generator(model_dir)
    expected = attribute(model, tokenizer, PROMPT, " blue sky", context)
    n = len(expected.answer_tokens)
    assert f"verdicts over its n={n} tokens" in done.output
    for verdict in expected.verdicts:  # the same numbers as the library call
        assert verdict.sentence in " ".join(done.output.split())
    page = out.read_text(encoding="utf-8")
    assert "attnkit explain" in page and "integrated gradients" in page


@pytest.mark.slow
def test_explain_generates_the_answer_when_none_is_given(model_dir, tmp_path):
    done = run(model_dir, PROMPT, "--max-new-tokens", "3", "--out", tmp_path / "g.html")
    assert done.exit_code == 0, done.output
    assert "(3 tokens)" in done.output  # the random model never ends early (no eos token)


def test_explain_refuses_what_it_cannot_take(model_dir, tmp_path):
    two = run(model_dir, "one prompt", "another", "--out", tmp_path / "x.html")
    assert two.exit_code == 2 and "one prompt, got 2 texts" in " ".join(two.output.split())
    outside = run(model_dir, PROMPT, "--context", "not in it", "--out", tmp_path / "x.html")
    assert outside.exit_code == 2 and "part of the prompt" in outside.output
    classifier = run("minilm", "a film", "--answer", "x", "--out", tmp_path / "x.html")
    assert classifier.exit_code == 2 and "generative models" in classifier.output
