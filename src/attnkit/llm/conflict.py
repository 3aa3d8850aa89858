"""A knowledge-conflict testbed: a tiny LM that knows a world of facts, asked against a context.

Contextual hallucination in the sense of Chuang et al. (2024, "Lookback Lens") is an answer
taken from what the model memorised instead of from the context it was given. The key–value
testbed (:mod:`attnkit.llm.testbed`) never produces it (its model knows nothing without the
context); this one does, by construction:

1. **Memorisation.** A :class:`World` fixes one value per key (``k05 → pmdo``). The model
   (attnkit's Llama-compatible :class:`~attnkit.models.lm.CausalLM`) first learns it without any
   context: training sequences ``|k05=pmdo;k17=xa;...`` (questions after an empty context).
2. **Reading.** Then it learns to answer from a context ``k37=fbca;k05=pmdo;|k05=`` (the
   format of :mod:`attnkit.llm.testbed`): present keys are answered with the context's value,
   which is the world's value except for a share ``conflict_share`` of asked facts given a
   *counterfactual* value (so that copying, not recalling, is what pays), and absent keys are
   answered :data:`~attnkit.llm.testbed.ABSTAIN` (``?``). Memory sequences keep being replayed.

At test time the context **agrees** with memory, **contradicts** it (counterfactual value), or
**lacks** the key, and every answer gets one of :data:`CONFLICT_VERDICTS`:

- ``grounded``: the context's value (present key);
- ``memory``: the memorised value where the context says otherwise or says nothing: the
  contextual hallucination (on an absent key, an answer the context does not support);
- ``invented``: any other value (neither the context's nor the memorised one);
- ``abstained``: ``?``; the supported answer for an absent key, a refusal for a present one.

``hallucinated`` (the label detectors learn) is 1 for ``memory`` and ``invented``. A model
trained to the end follows the context almost always; the default budget stops it part way, so
that each failure occurs at a measurable rate (``benchmarks/hallucination.py`` reports them).
The tokenizer, saving and loading (real Hugging Face ``LlamaForCausalLM`` and
``PreTrainedTokenizerFast``, offline) are those of :mod:`attnkit.llm.testbed`.
"""

from __future__ import annotations

import json
import math
import random
import string
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from attnkit.llm.testbed import (
    ABSTAIN,
    TaskConfig,
    TestbedConfig,
    answer_loss,
    load_testbed,
    save_testbed,
)
from attnkit.models.lm import CausalLM
from attnkit.train import Trainer

__all__ = [
    "CONFLICT_VERDICTS",
    "ConflictExample",
    "ConflictTrainConfig",
    "World",
    "label_conflict",
    "load_conflict",
    "make_conflict_examples",
    "make_world",
    "save_conflict",
    "train_conflict_model",
]

CONFLICT_VERDICTS = ("grounded", "memory", "invented", "abstained")
KINDS = ("agree", "conflict", "absent")


@dataclass(frozen=True)
class World:
    """The facts the model memorises: one value per key of ``task`` (``task.abstain`` is set)."""

    task: TaskConfig
    values: dict[str, str]  # key -> memorised value

    def __post_init__(self) -> None:
        if not self.task.abstain:
            raise ValueError("the world's task must have abstain=True (absent keys answer '?')")
        if set(self.values) != set(self.task.keys):
            raise ValueError(
                f"values must hold one value per key of the task ({self.task.num_keys}), "
                f"got {len(self.values)}"
            )


def make_world(
    num_keys: int = 48, min_value_len: int = 3, max_value_len: int = 4, seed: int = 0
) -> World:
    """Random values (distinct letters within a value), deterministic in ``seed``."""
    task = TaskConfig(num_keys=num_keys, min_facts=2, max_facts=4, min_value_len=min_value_len,
                      max_value_len=max_value_len, abstain=True)  # fmt: skip
    rng = random.Random(seed)
    values = {
        key: "".join(rng.sample(string.ascii_lowercase, rng.randint(min_value_len, max_value_len)))
        for key in task.keys
    }
    return World(task, values)


def _other_value(rng: random.Random, world: World, key: str) -> str:
    """A counterfactual value for ``key``: same length range, differs from the memorised one at
    its first character (so that the answer's first token already tells them apart)."""
    task, memorised = world.task, world.values[key]
    while True:
        value = "".join(
            rng.sample(string.ascii_lowercase, rng.randint(task.min_value_len, task.max_value_len))
        )
        if value[0] != memorised[0]:
            return value


@dataclass(frozen=True)
class ConflictExample:
    """One question against a context."""

    context: str  # the facts, "k37=fbca;k05=pmdo;"
    key: str
    kind: str  # "agree", "conflict" or "absent"
    value: str | None  # the context's value; None when the key is absent
    memory: str  # the world's (memorised) value

    @property
    def prompt(self) -> str:
        return f"{self.context}|{self.key}="

    @property
    def present(self) -> bool:
        return self.value is not None


def _facts(rng: random.Random, world: World, kind: str, conflict_other: float = 0.0):
    """A context of world facts and the key asked; ``kind`` decides the asked fact's value."""
    task = world.task
    keys = rng.sample(task.keys, rng.randint(task.min_facts, task.max_facts) + (kind == "absent"))
    asked = keys.pop() if kind == "absent" else rng.choice(keys)
    facts = {k: world.values[k] for k in keys}
    for k in keys:  # other facts may be counterfactual too (training only)
        if k != asked and rng.random() < conflict_other:
            facts[k] = _other_value(rng, world, k)
    if kind == "conflict":
        facts[asked] = _other_value(rng, world, asked)
    return facts, asked


def make_conflict_examples(
    world: World, count: int, seed: int = 0, shares: tuple[float, float, float] = (1, 1, 1)
) -> list[ConflictExample]:
    """``count`` questions whose kinds (agree, conflict, absent) follow ``shares`` (rounded,
    shuffled); deterministic in ``seed``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if len(shares) != 3 or min(shares) < 0 or sum(shares) <= 0:
        raise ValueError(f"shares must be 3 non-negative weights, not all 0, got {shares}")
    rng = random.Random(seed)
    total = sum(shares)
    counts = [round(count * s / total) for s in shares[:2]]
    counts.append(count - sum(counts))
    kinds = [kind for kind, n in zip(KINDS, counts, strict=True) for _ in range(n)]
    rng.shuffle(kinds)
    examples = []
    for kind in kinds:
        facts, asked = _facts(rng, world, kind)
        text = "".join(f"{k}={v};" for k, v in facts.items())
        examples.append(ConflictExample(text, asked, kind, facts.get(asked), world.values[asked]))
    return examples


def label_conflict(example: ConflictExample, text: str) -> str:
    """Verdict on a continuation of ``example.prompt``: one of :data:`CONFLICT_VERDICTS`.

    The answer is the text before the first ``;``. ``grounded`` needs a present key; ``memory``
    is the memorised value where it differs from the context's (or the key is absent).
    """
    answer = text.split(";", 1)[0]
    if answer == ABSTAIN:
        return "abstained"
    if example.present and answer == example.value:
        return "grounded"
    return "memory" if answer == example.memory else "invented"


@dataclass(frozen=True)
class ConflictTrainConfig:
    """The two training phases of :func:`train_conflict_model`."""

    # phase 2 (steps, batch, width ...); benchmarks/hallucination.py: 300 + 800 steps, share 0.4
    model: TestbedConfig = field(
        default_factory=lambda: TestbedConfig(
            dim=64, hidden_dim=128, steps=800, lr=3e-3, warmup=50, batch_size=32
        )
    )
    memorise_steps: int = 300  # phase 1: memory sequences only, at model.lr (own warm-up/decay)
    memory_questions: int = 12  # questions per memory sequence
    conflict_share: float = 0.4  # asked facts with a counterfactual value in phase 2
    conflict_other: float = 0.4  # other context facts with a counterfactual value in phase 2
    absent_share: float = 0.25  # questions about absent keys (answered '?') in phase 2
    replay_share: float = 0.25  # memory sequences among phase 2's batch

    def __post_init__(self) -> None:
        for name in ("conflict_share", "conflict_other", "absent_share", "replay_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.memorise_steps < 0 or self.memory_questions < 1:
            raise ValueError(
                "memorise_steps must be >= 0 and memory_questions >= 1, got "
                f"{self.memorise_steps}, {self.memory_questions}"
            )


def _memory_row(rng, world: World, config: ConflictTrainConfig, vocab) -> tuple[list, list]:
    ids, mask = [vocab["|"]], [False]
    for key in rng.sample(world.task.keys, min(config.memory_questions, world.task.num_keys)):
        answer = [vocab[t] for t in (*world.values[key], ";")]
        ids += [vocab[f"{key}="], *answer]
        mask += [False] + [True] * len(answer)
    return ids, mask


def _context_row(rng, world: World, config: ConflictTrainConfig, vocab) -> tuple[list, list]:
    questions = config.model.questions
    kinds = ["absent" if rng.random() < config.absent_share else
             "conflict" if rng.random() < config.conflict_share else "agree"
             for _ in range(questions)]  # fmt: skip
    # one context per row; its first question decides which fact is counterfactual
    facts, asked = _facts(rng, world, kinds[0], config.conflict_other)
    ids = [vocab[t] for k, v in facts.items() for t in (f"{k}=", *v, ";")]
    ids.append(vocab["|"])
    mask = [False] * len(ids)
    present = [k for k in facts if k != asked]
    absent = [k for k in world.task.keys if k not in facts]
    for i, kind in enumerate(kinds):
        key = asked if i == 0 else rng.choice(absent if kind == "absent" else present or [asked])
        answer = [vocab[t] for t in (*facts.get(key, ABSTAIN), ";")]
        ids += [vocab[f"{key}="], *answer]
        mask += [False] + [True] * len(answer)
    return ids, mask


def _batch(rows: list[tuple[list, list]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    target = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (row, mask) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        target[i, : len(mask)] = torch.tensor(mask)
    return ids, target[:, 1:]


def _phase(model: CausalLM, train: TestbedConfig, steps: int, batch) -> list[float]:
    """``steps`` steps of one :class:`~attnkit.train.Trainer` run (a fresh AdamW, its own warm-up
    and cosine decay) over the endless stream ``batch(), batch(), ...``; the loss of each."""
    if steps == 0:
        return []

    def stream() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield batch()

    config = replace(train.trainer_config(), max_steps=steps)
    return Trainer(model, config, loss=answer_loss).fit(stream()).losses


def train_conflict_model(
    world: World, config: ConflictTrainConfig = ConflictTrainConfig(), seed: int = 0
) -> tuple[CausalLM, list[float]]:
    """Memorise ``world`` (phase 1), then learn to answer from a context (phase 2).

    Phase 1 runs ``config.memorise_steps`` steps on memory sequences; phase 2 runs
    ``config.model.steps`` steps on batches of ``config.model.batch_size`` rows, a share
    ``replay_share`` of them memory sequences, the rest a context with ``config.model.questions``
    questions. The loss is the cross-entropy on the answers' tokens only. Deterministic in
    ``seed`` on one thread.

    Returns:
        The model (eval mode) and the loss of every step of both phases.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vocab = {token: i for i, token in enumerate(world.task.vocabulary)}
    train = config.model
    model = CausalLM(_model_config(world, config))

    def memory_batch():
        rows = [_memory_row(rng, world, config, vocab) for _ in range(train.batch_size)]
        return _batch(rows, vocab["<pad>"])

    def reading_batch():
        rows = [_memory_row(rng, world, config, vocab) if rng.random() < config.replay_share
                else _context_row(rng, world, config, vocab)
                for _ in range(train.batch_size)]  # fmt: skip
        return _batch(rows, vocab["<pad>"])

    losses = _phase(model, train, config.memorise_steps, memory_batch)
    losses += _phase(model, train, train.steps, reading_batch)
    return model.eval(), losses


def _model_config(world: World, config: ConflictTrainConfig):
    task, train = world.task, config.model
    memory = 1 + config.memory_questions * (task.max_value_len + 2)
    reading = (task.max_facts + 1) * (task.max_value_len + 2) + train.questions * (
        task.max_value_len + 2
    )
    base = train.model_config(task)
    longest = max(memory, reading) + 2
    return replace(base, max_seq_len=max(base.max_seq_len, 2 ** math.ceil(math.log2(longest))))


def save_conflict(model: CausalLM, world: World, directory: str | Path) -> Path:
    """Save the model (Hugging Face Llama format), its tokenizer, task and world."""
    directory = save_testbed(model, world.task, directory)
    (directory / "world.json").write_text(json.dumps(world.values, indent=2))
    return directory


def load_conflict(directory: str | Path, attn_implementation: str = "sdpa"):
    """``(LlamaForCausalLM, tokenizer, World)`` saved by :func:`save_conflict`, offline."""
    model, tokenizer, task = load_testbed(directory, attn_implementation)
    values = json.loads((Path(directory) / "world.json").read_text())
    return model, tokenizer, World(task, values)


def world_dict(world: World) -> dict:
    """The world as JSON-ready data."""
    return {"task": asdict(world.task), "values": dict(world.values)}
