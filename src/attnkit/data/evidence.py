"""A generated text-classification task whose evidence is known token by token.

Every example starts with ``[CLS]``; the other tokens are filler words except ``k`` evidence
words, all from the word list of the example's class. The label is decided by the evidence words
alone, so an explanation is right exactly when it points at them: the test bed for the
interpretability checks (and the "evidence words are known" task of the models issue).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["EvidenceTask", "make_evidence_task"]


@dataclass(frozen=True)
class EvidenceTask:
    """Token ids ``(n, L)`` with ``[CLS]`` first, labels ``(n,)``, evidence mask ``(n, L)``."""

    tokens: Tensor
    labels: Tensor
    evidence: Tensor
    vocabulary: tuple[str, ...]

    def text(self, index: int) -> str:
        """Example ``index`` as words."""
        return " ".join(self.vocabulary[i] for i in self.tokens[index].tolist())


def make_evidence_task(
    n: int,
    length: int = 12,
    classes: int = 2,
    evidence_per_example: int = 1,
    words_per_class: int = 3,
    fillers: int = 24,
    seed: int = 0,
) -> EvidenceTask:
    """``n`` examples of ``length`` tokens (``[CLS]`` included).

    Args:
        classes: number of labels; class ``c`` has ``words_per_class`` evidence words.
        evidence_per_example: evidence words in each example, at distinct random positions.
        fillers: size of the filler vocabulary.
        seed: the generator's seed; the same seed gives the same task.
    """
    if n < 1 or classes < 2 or words_per_class < 1 or fillers < 1:
        raise ValueError(
            f"need n >= 1, classes >= 2, words_per_class >= 1 and fillers >= 1; got n={n}, "
            f"classes={classes}, words_per_class={words_per_class}, fillers={fillers}"
        )
    if not 1 <= evidence_per_example < length:
        raise ValueError(
            f"evidence_per_example must be in [1, length - 1] = [1, {length - 1}], "
            f"got {evidence_per_example}"
        )
    vocabulary = ("[CLS]",)
    vocabulary += tuple(f"class{c}_word{w}" for c in range(classes) for w in range(words_per_class))
    vocabulary += tuple(f"filler{f}" for f in range(fillers))
    first_filler = 1 + classes * words_per_class
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(first_filler, len(vocabulary), (n, length), generator=gen)
    tokens[:, 0] = 0
    labels = torch.randint(0, classes, (n,), generator=gen)
    order = torch.rand(n, length - 1, generator=gen).argsort(-1)[:, :evidence_per_example] + 1
    words = torch.randint(0, words_per_class, (n, evidence_per_example), generator=gen)
    rows = torch.arange(n)[:, None]
    tokens[rows, order] = 1 + labels[:, None] * words_per_class + words
    evidence = torch.zeros(n, length, dtype=torch.bool)
    evidence[rows, order] = True
    return EvidenceTask(tokens, labels, evidence, vocabulary)
