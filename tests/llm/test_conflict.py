"""The knowledge-conflict testbed: world, examples, labels, two-phase training, HF round trip."""

import pytest
import torch

from attnkit.llm.conflict import (
    ConflictExample,
    ConflictTrainConfig,
    label_conflict,
    load_conflict,
    make_conflict_examples,
    make_world,
    save_conflict,
    train_conflict_model,
)
from attnkit.llm.testbed import TaskConfig, TestbedConfig, run_examples

pytest.importorskip("transformers")

TINY = ConflictTrainConfig(
    model=TestbedConfig(dim=16, hidden_dim=32, num_layers=2, num_heads=2, steps=6, lr=3e-3,
                      warmup=2, batch_size=8, questions=2),
    memorise_steps=6, memory_questions=4,
)  # fmt: skip


def test_world_is_deterministic_and_complete():
    world = make_world(num_keys=10, seed=3)
    assert world == make_world(num_keys=10, seed=3)
    assert world != make_world(num_keys=10, seed=4)
    assert sorted(world.values) == world.task.keys and world.task.abstain
    for value in world.values.values():
        assert 3 <= len(value) <= 4 and len(set(value)) == len(value)


def test_examples_follow_their_kind():
    world = make_world(num_keys=12, seed=0)
    examples = make_conflict_examples(world, 90, seed=1)
    assert [e.kind for e in examples].count("conflict") == 30
    assert make_conflict_examples(world, 90, seed=1) == examples
    for e in examples:
        facts = dict(f.split("=") for f in e.context.rstrip(";").split(";"))
        assert e.memory == world.values[e.key]
        assert e.prompt == f"{e.context}|{e.key}="
        if e.kind == "absent":
            assert e.key not in facts and e.value is None
            continue
        assert facts[e.key] == e.value
        others = {k: v for k, v in facts.items() if k != e.key}
        assert all(world.values[k] == v for k, v in others.items())  # the rest agree at test
        if e.kind == "agree":
            assert e.value == e.memory
        else:  # counterfactual: differs already at the first character
            assert e.value[0] != e.memory[0]
    only = make_conflict_examples(world, 10, seed=0, shares=(0, 1, 0))
    assert {e.kind for e in only} == {"conflict"}


def test_labels():
    conflict = ConflictExample("k01=abc;", "k01", "conflict", "abc", "xyz")
    assert label_conflict(conflict, "abc;") == "grounded"
    assert label_conflict(conflict, "xyz;k02") == "memory"
    assert label_conflict(conflict, "abd;") == "invented"
    assert label_conflict(conflict, "?;") == "abstained"
    absent = ConflictExample("k02=qrs;", "k01", "absent", None, "xyz")
    assert label_conflict(absent, "?;") == "abstained"
    assert label_conflict(absent, "xyz;") == "memory"
    assert label_conflict(absent, "qrs;") == "invented"
    agree = ConflictExample("k01=xyz;", "k01", "agree", "xyz", "xyz")
    assert label_conflict(agree, "xyz;") == "grounded"


def test_config_errors():
    with pytest.raises(ValueError, match="conflict_share"):
        ConflictTrainConfig(conflict_share=1.5)
    with pytest.raises(ValueError, match="memorise_steps"):
        ConflictTrainConfig(memorise_steps=-1)
    with pytest.raises(ValueError, match="abstain"):
        from attnkit.llm.conflict import World

        World(TaskConfig(num_keys=4, min_facts=1, max_facts=2), {})
    with pytest.raises(ValueError, match="shares"):
        make_conflict_examples(make_world(num_keys=6), 3, shares=(0, 0, 0))


def test_training_is_deterministic_and_round_trips_through_hf(tmp_path):
    torch.set_num_threads(1)
    world = make_world(num_keys=8, seed=0)
    model, losses = train_conflict_model(world, TINY, seed=0)
    _, same = train_conflict_model(world, TINY, seed=0)
    assert losses == same and len(losses) == TINY.memorise_steps + TINY.model.steps
    assert all(loss > 0 for loss in losses)
    hf, tokenizer, loaded = load_conflict(save_conflict(model, world, tmp_path / "m"))
    assert loaded == world
    example = make_conflict_examples(world, 3, seed=0)[0]
    ids = tokenizer(example.prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, model(ids), atol=1e-5, rtol=1e-5)
    answers = run_examples(hf, tokenizer, make_conflict_examples(world, 6, seed=2),
                           label=label_conflict)  # fmt: skip
    for a in answers:
        assert a.verdict == label_conflict(a.example, a.trace.text)
        assert a.hallucinated == int(a.verdict in ("memory", "invented"))
