"""An honest offline testbed for contextual hallucination: key–value retrieval.

The context lists facts ``k37=fbca;k05=pmdoa;...``; the prompt ends with a question ``|k05=``.
When the key is in the context the model must copy its value; when it is absent, whatever value
the model gives is invented (Chuang et al. 2024, "Lookback Lens", study hallucinations of this
kind: answers not supported by the given context). A small :class:`~attnkit.models.lm.CausalLM`
is trained here on present keys (so absent keys provoke an answer all the same), or also on
absent keys answered :data:`ABSTAIN` (``?``, with ``TaskConfig(abstain=True)``), and every
generated answer has a true label:

- ``grounded``: the key is present and the answer is its value, copied from the context;
- ``wrong``: the key is present but the answer differs from its value (a contextual
  hallucination);
- ``invented``: the key is absent and the answer is a value: nothing in the context supports it;
- ``abstained``: the key is absent and the answer is :data:`ABSTAIN`, the supported answer.

A key with its ``=`` is one token (``k00=`` ... ``k99=``), so that finding the fact asked for is
one induction step (Olsson et al. 2022: find the earlier ``k05=``, copy what followed it); values
are character tokens, no character repeating within a context. With ``shared_prefix=p`` every
value of a context starts with the same ``p`` characters: past them, copying must tell the facts
apart, and a model that has not quite learned it copies another fact's tail, so that greedy and
sampled answers to present keys go wrong now and then. The tokenizer is a
``tokenizers`` word-level model wrapped as a ``transformers.PreTrainedTokenizerFast`` (offsets
included, so ``attnkit.llm.generate(context=<substring>)`` works), saved and loaded offline.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attnkit import train  # not its TrainConfig here: this module's old TrainConfig moved
from attnkit._moved import moved_name
from attnkit.llm.generation import GenerationTrace, generate
from attnkit.llm.lookback_lens import span_features, window_features
from attnkit.models.lm import CausalLM, CausalLMConfig

__all__ = [
    "LabelledTrace",
    "RetrievalQuestion",
    "TaskConfig",
    "TestbedConfig",
    "answer_log_prob",
    "answer_loss",
    "build_tokenizer",
    "detector_inputs",
    "label_answer",
    "load_testbed",
    "make_examples",
    "run_examples",
    "save_testbed",
    "train_model",
]

SPECIAL = ("<pad>", "<unk>")
PUNCTUATION = ("=", ";", "|")  # fact, fact end (the answer's end), question mark
ABSTAIN = "?"  # the answer "not in the context", a token of tasks with abstain=True
VERDICTS = ("grounded", "wrong", "invented", "abstained")


@dataclass(frozen=True)
class TaskConfig:
    """Shape of the key–value retrieval task."""

    num_keys: int = 64  # key vocabulary k00 .. k{num_keys-1} (at most 100)
    min_facts: int = 2  # facts per context, drawn uniformly in [min_facts, max_facts]
    max_facts: int = 4
    alphabet: str = string.ascii_lowercase  # characters of the values, one token each
    min_value_len: int = 3  # characters per value, drawn uniformly in [min, max]
    max_value_len: int = 6
    # the first shared_prefix characters of every value in a context are the same, so copying
    # a value past them must tell the facts apart (the other facts are distractors); the other
    # characters never repeat within a context
    shared_prefix: int = 0
    abstain: bool = False  # the vocabulary ends with ABSTAIN, the answer to an absent key

    def __post_init__(self) -> None:
        if not 1 <= self.num_keys <= 100:
            raise ValueError(f"num_keys must be in [1, 100], got {self.num_keys}")
        if not 1 <= self.min_facts <= self.max_facts < self.num_keys:
            raise ValueError(
                "facts must satisfy 1 <= min_facts <= max_facts < num_keys, got "
                f"{self.min_facts}, {self.max_facts}, {self.num_keys}"
            )
        if not 1 <= self.min_value_len <= self.max_value_len:
            raise ValueError(
                "value lengths must satisfy 1 <= min_value_len <= max_value_len, got "
                f"{self.min_value_len}, {self.max_value_len}"
            )
        letters = self.alphabet.isascii() and self.alphabet.isalpha()
        if not letters or len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"alphabet must be distinct ASCII letters, got {self.alphabet!r}")
        if not 0 <= self.shared_prefix < self.min_value_len:
            raise ValueError(
                f"shared_prefix must be in [0, min_value_len), got {self.shared_prefix} "
                f"(min_value_len {self.min_value_len})"
            )
        needed = self.shared_prefix + self.max_facts * (self.max_value_len - self.shared_prefix)
        if needed > len(self.alphabet):
            raise ValueError(
                "a context draws its characters without repetition: shared_prefix + max_facts "
                f"* (max_value_len - shared_prefix) ({needed}) must be <= len(alphabet) "
                f"({len(self.alphabet)})"
            )

    @property
    def keys(self) -> list[str]:
        return [f"k{i:02d}" for i in range(self.num_keys)]

    @property
    def vocabulary(self) -> list[str]:
        """Every token, in id order."""
        keys = (f"{key}=" for key in self.keys)
        return [*SPECIAL, *PUNCTUATION, *self.alphabet, *keys, *[ABSTAIN] * self.abstain]


@dataclass(frozen=True)
class RetrievalQuestion:
    """One retrieval question."""

    context: str  # the facts, "k37=fbca;k05=pmdoa;"
    key: str  # the key asked for
    value: str | None  # its value in the context; None when the key is absent

    @property
    def prompt(self) -> str:
        return f"{self.context}|{self.key}="

    @property
    def present(self) -> bool:
        return self.value is not None


def _context(rng: random.Random, task: TaskConfig) -> dict[str, str]:
    """Random facts; past the shared prefix, no character repeats within one context."""
    count = rng.randint(task.min_facts, task.max_facts)
    keys = rng.sample(task.keys, count)
    lengths = [rng.randint(task.min_value_len, task.max_value_len) for _ in keys]
    tails = [n - task.shared_prefix for n in lengths]
    chars = iter(rng.sample(task.alphabet, task.shared_prefix + sum(tails)))
    prefix = "".join(next(chars) for _ in range(task.shared_prefix))
    return {
        key: prefix + "".join(next(chars) for _ in range(n))
        for key, n in zip(keys, tails, strict=True)
    }


def _text(facts: dict[str, str]) -> str:
    return "".join(f"{key}={value};" for key, value in facts.items())


def make_examples(
    count: int, task: TaskConfig = TaskConfig(), seed: int = 0, absent_share: float = 0.5
) -> list[RetrievalQuestion]:
    """``count`` questions, a share ``absent_share`` of them (rounded) about absent keys.

    Deterministic in ``seed``; the order of present and absent questions is shuffled.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if not 0.0 <= absent_share <= 1.0:
        raise ValueError(f"absent_share must be in [0, 1], got {absent_share}")
    rng = random.Random(seed)
    absent = round(count * absent_share)
    flags = [True] * absent + [False] * (count - absent)
    rng.shuffle(flags)
    examples = []
    for is_absent in flags:
        facts = _context(rng, task)
        if is_absent:
            key = rng.choice([k for k in task.keys if k not in facts])
            examples.append(RetrievalQuestion(_text(facts), key, None))
        else:
            key = rng.choice(list(facts))
            examples.append(RetrievalQuestion(_text(facts), key, facts[key]))
    return examples


def label_answer(example: RetrievalQuestion, text: str) -> str:
    """Verdict on a generated continuation of ``example.prompt``: one of :data:`VERDICTS`.

    The answer is the text before the first ``;`` (all of it when there is none). An absent
    key's answer is ``abstained`` when it is :data:`ABSTAIN`, else ``invented``; a present key's
    abstention is ``wrong``.
    """
    answer = text.split(";", 1)[0]
    if not example.present:
        return "abstained" if answer == ABSTAIN else "invented"
    return "grounded" if answer == example.value else "wrong"


# ---------------------------------------------------------------------------------- tokenizer


def build_tokenizer(task: TaskConfig = TaskConfig()):
    """A ``PreTrainedTokenizerFast``: keys are words, everything else single characters.

    Spaces are ignored; decoding joins the tokens without separators, so ``decode(encode(s))``
    gives ``s`` back for any text of the task.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(task.vocabulary)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"k\d\d=|."), "isolated")]
    )
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>")


# ---------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TestbedConfig:
    """Model size, training data and optimisation for :func:`train_model`."""

    __test__ = False  # not a pytest test class, although its name starts with "Test"

    dim: int = 64  # model width
    num_layers: int = 2  # decoder blocks
    num_heads: int = 4  # attention heads (no grouping: num_kv_heads = num_heads)
    hidden_dim: int = 128  # SwiGLU inner width
    steps: int = 700  # optimizer steps
    batch_size: int = 64  # contexts per step
    questions: int = 4  # present-key questions answered after each training context
    absent_questions: int = 0  # then questions about absent keys, answered ABSTAIN (abstain)
    lr: float = 1e-3  # AdamW peak learning rate (linear warm-up, cosine decay)
    warmup: int = 100  # warm-up steps
    weight_decay: float = 0.01

    def trainer_config(self) -> train.TrainConfig:
        """The optimisation as an :class:`attnkit.train.TrainConfig`: ``steps`` steps of AdamW
        (betas 0.9, 0.98; weight decay on every parameter), ``warmup`` steps of linear warm-up
        then cosine decay to 0, the gradient norm clipped to 1, on the CPU. ``seed=None``:
        :func:`train_model` seeds the initialisation and the batches itself."""
        return train.TrainConfig(
            max_steps=self.steps, batch_size=self.batch_size, lr=self.lr,
            weight_decay=self.weight_decay, decay="all", betas=(0.9, 0.98), schedule="cosine",
            warmup=self.warmup, grad_clip=1.0, seed=None, patience=None, progress=False,
            device="cpu",
        )  # fmt: skip

    def model_config(self, task: TaskConfig) -> CausalLMConfig:
        longest = (task.max_facts + self.questions) * (task.max_value_len + 3) + (
            3 * self.absent_questions
        )
        return CausalLMConfig(
            vocab_size=len(task.vocabulary), dim=self.dim, num_layers=self.num_layers,
            num_heads=self.num_heads, num_kv_heads=self.num_heads, hidden_dim=self.hidden_dim,
            max_seq_len=max(128, 2 ** math.ceil(math.log2(longest + 2))),
        )  # fmt: skip


def _training_batch(
    rng: random.Random, task: TaskConfig, config: TestbedConfig, vocab: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids ``(B, T)`` and a loss mask over targets ``(B, T - 1)``: the answers' tokens."""
    rows, masks = [], []
    for _ in range(config.batch_size):
        facts = _context(rng, task)
        ids = [vocab[t] for key, value in facts.items() for t in (f"{key}=", *value, ";")]
        ids.append(vocab["|"])
        mask = [False] * len(ids)
        asked = rng.sample(list(facts), min(config.questions, len(facts)))
        if config.absent_questions:
            absent = [key for key in task.keys if key not in facts]
            asked += rng.sample(absent, min(config.absent_questions, len(absent)))
            rng.shuffle(asked)
        for key in asked:
            answer = [vocab[t] for t in (*facts.get(key, ABSTAIN), ";")]
            ids += [vocab[f"{key}="], *answer]
            mask += [False] + [True] * len(answer)
        rows.append(ids)
        masks.append(mask)
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), vocab["<pad>"], dtype=torch.long)
    target_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (row, mask) in enumerate(zip(rows, masks, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        target_mask[i, : len(mask)] = torch.tensor(mask)
    return ids, target_mask[:, 1:]


def answer_loss(model: CausalLM, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on the answers' tokens only: ``batch = (ids (B, T), mask (B, T - 1))``,
    ``mask`` true on the targets that are answer tokens."""
    ids, mask = batch
    logits = model(ids[:, :-1])  # (B, T-1, V)
    return F.cross_entropy(logits[mask], ids[:, 1:][mask])


def train_model(
    task: TaskConfig = TaskConfig(), config: TestbedConfig = TestbedConfig(), seed: int = 0
) -> tuple[CausalLM, list[float]]:
    """Train a :class:`CausalLM` to answer present-key questions by copying.

    Each training sequence is a context followed by ``config.questions`` questions about keys
    in it, each with its answer, and ``config.absent_questions`` about keys not in it, answered
    :data:`ABSTAIN` (``task.abstain`` must be set), in random order; the loss is the
    cross-entropy on the answers' tokens (value characters or ABSTAIN, and the closing ``;``)
    only (:func:`answer_loss`). One :class:`~attnkit.train.Trainer` run over an endless stream
    of such batches, with :meth:`TestbedConfig.trainer_config`. Deterministic in ``seed`` on one
    thread.

    Returns:
        The model (in eval mode) and the loss of every step.
    """
    if config.absent_questions and not task.abstain:
        raise ValueError(
            f"absent_questions ({config.absent_questions}) needs a task with abstain=True"
        )
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vocab = {token: i for i, token in enumerate(task.vocabulary)}
    model = CausalLM(config.model_config(task))

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield _training_batch(rng, task, config, vocab)

    result = train.Trainer(model, config.trainer_config(), loss=answer_loss).fit(batches())
    return model.eval(), result.losses


def save_testbed(model: CausalLM, task: TaskConfig, directory: str | Path) -> Path:
    """Save the model (Hugging Face Llama format), its tokenizer and the task to ``directory``."""
    import json

    directory = Path(directory)
    model.save_pretrained(directory)
    build_tokenizer(task).save_pretrained(directory)
    (directory / "task.json").write_text(json.dumps(asdict(task), indent=2))
    return directory


def load_testbed(directory: str | Path, attn_implementation: str = "sdpa"):
    """``(LlamaForCausalLM, tokenizer, TaskConfig)`` saved by :func:`save_testbed`, offline.

    Generation stops at ``;`` (the end of an answer) and pads with ``<pad>``.
    """
    import json

    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    task = TaskConfig(**json.loads((directory / "task.json").read_text()))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    model = LlamaForCausalLM.from_pretrained(directory, attn_implementation=attn_implementation)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(";")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer, task


# ---------------------------------------------------------------------------------- labelling


@dataclass(frozen=True)
class LabelledTrace:
    """A generated answer with its attention trace and its true label."""

    example: RetrievalQuestion
    trace: GenerationTrace
    verdict: str  # one of VERDICTS
    log_prob: float  # mean log-probability of the generated tokens under the model

    @property
    def hallucinated(self) -> int:
        """1 when the answer is not supported by the context (wrong, invented, or, on the
        knowledge-conflict testbed, memory), else 0.

        Abstaining on an absent key is the supported answer: 0.
        """
        return int(self.verdict in ("wrong", "invented", "memory"))


def answer_log_prob(model, trace: GenerationTrace) -> float:
    """Mean log-probability the model gives its own generated tokens (one teacher-forced pass)."""
    if len(trace.new_ids) == 0:
        raise ValueError("the trace has no generated tokens")
    sequence = torch.cat([trace.prompt_ids, trace.new_ids])[None].to(model.device)
    with torch.no_grad():
        logits = model(input_ids=sequence).logits[0, len(trace.prompt_ids) - 1 : -1].float()
    picked = logits.log_softmax(-1).gather(-1, trace.new_ids[:, None].to(logits.device))
    return float(picked.mean())


def run_examples(
    model,
    tokenizer,
    examples: Sequence[RetrievalQuestion],
    max_new_tokens: int = 12,
    batch_size: int = 32,
    label=None,
    **generate_kwargs,
) -> list[LabelledTrace]:
    """Answer the examples with :func:`attnkit.llm.generate` and label every answer.

    Prompts run in left-padded batches of ``batch_size``; ``generate_kwargs`` go to
    ``model.generate`` (greedy by default). ``label(example, text)`` gives the verdict
    (default :func:`label_answer`; :func:`attnkit.llm.conflict.label_conflict` for the
    knowledge-conflict testbed's examples).
    """
    label = label_answer if label is None else label
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    generate_kwargs.setdefault("do_sample", False)
    labelled = []
    for first in range(0, len(examples), batch_size):
        batch = examples[first : first + batch_size]
        traces = generate(
            model,
            tokenizer,
            [example.prompt for example in batch],
            context=[example.context for example in batch],
            max_new_tokens=max_new_tokens,
            **generate_kwargs,
        )
        for example, trace in zip(batch, traces, strict=True):
            verdict = label(example, tokenizer.decode(trace.new_ids))
            labelled.append(LabelledTrace(example, trace, verdict, answer_log_prob(model, trace)))
    return labelled


def detector_inputs(
    labelled: Sequence[LabelledTrace], window: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and groups for :class:`~attnkit.llm.lookback_lens.LookbackLens`.

    With ``window=None`` one row per answer (span means, ``(N, L·H)``); otherwise one row per
    sliding window of ``window`` tokens, labelled as its answer, with ``groups`` the answer's
    index so that folds keep an answer's windows together.
    """
    rows, labels, groups = [], [], []
    for i, item in enumerate(labelled):
        ratio = item.trace.lookback_ratio
        features = span_features(ratio)[None] if window is None else window_features(ratio, window)
        rows.append(features)
        labels += [item.hallucinated] * len(features)
        groups += [i] * len(features)
    return np.concatenate(rows), np.array(labels), np.array(groups)


def __getattr__(name: str):
    return moved_name(__name__, name)  # TrainConfig -> TestbedConfig, Example -> RetrievalQuestion
