"""A GRU encoder-decoder with Bahdanau attention (Bahdanau, Cho & Bengio 2015), and its baseline.

Encoder: embeddings, a bidirectional GRU over the source, states ``h_j`` of size ``2H``; the
decoder starts from ``s_0 = tanh(W [h_fwd_last; h_bwd_first])``. At output step ``i`` a context
``c_i`` is read from the source, ``s_i = GRU(s_{i-1}, [E y_{i-1}; c_i])`` and the next token's
logits are ``Linear([s_i; c_i; E y_{i-1}])``.

- ``attention="soft"``: ``c_i = sum_j a_ij h_j`` with ``a_i = softmax(vᵀ tanh(W s_{i-1} + U
  h_j))`` over the real source positions (:class:`~attnkit.attention.soft.SoftAttention` with the
  additive score); the weights ``a_ij`` are the alignment ``(B, T_out, T_in)``.
- ``attention="none"``: the baseline of Cho et al. 2014 / Sutskever et al. 2014, one fixed
  context ``c = [h_fwd_last; h_bwd_first]`` for every step: the whole input must fit in ``2H``
  numbers, which is what degrades on long inputs.

Training uses teacher forcing (:meth:`Seq2Seq.forward`), inference greedy decoding
(:meth:`Seq2Seq.generate`). :func:`attnkit.tasks.dates_recipe` trains it on date normalization
(:mod:`attnkit.data.dates`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkit._moved import moved_name
from attnkit.attention.soft import SoftAttention

__all__ = [
    "Seq2Seq",
    "Seq2SeqConfig",
    "Seq2SeqResult",
    "exact_match",
    "sequence_loss",
]

ATTENTIONS = ("soft", "none")


@dataclass(frozen=True)
class Seq2SeqConfig:
    source_vocab_size: int = 67  # source tokens (the date task's characters: 67)
    target_vocab_size: int = 15  # target tokens (the date task's: 15)
    embed_dim: int = 32  # token embedding size E, source and target
    hidden: int = 64  # GRU size H: the encoder's per direction and the decoder's state
    attention: str = "soft"  # "soft" (Bahdanau additive attention) or "none" (fixed context)
    attention_dim: int = 64  # hidden size A of the additive score vᵀ tanh(W s + U h)
    dropout: float = 0.0  # dropout on the embeddings and on the decoder's output features
    pad_id: int = 0  # padding in source and target
    bos_id: int = 2  # the decoder's first input token
    eos_id: int = 3  # ends a target sequence; greedy decoding stops after it

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"attention must be one of {list(ATTENTIONS)} for Seq2Seq, got {self.attention!r}"
            )
        for name in ("source_vocab_size", "target_vocab_size", "embed_dim", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.attention_dim < 1:
            raise ValueError(f"attention_dim must be positive, got {self.attention_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class Seq2SeqResult:
    """What the decoder produced.

    Attributes:
        logits: ``(B, T_out, V)`` next-token logits at each output step.
        tokens: ``(B, T_out)`` the argmax tokens; from :meth:`Seq2Seq.generate`, padding after
            ``</s>``.
        alignments: ``(B, T_out, T_in)`` attention weights of each output step over the source
            (rows sum to 1 over the real source positions); ``None`` for ``attention="none"``.
    """

    logits: Tensor
    tokens: Tensor
    alignments: Tensor | None


class Seq2Seq(nn.Module):
    """GRU encoder-decoder, with Bahdanau attention or a fixed context (see the module doc)."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        e, h = config.embed_dim, config.hidden
        self.source_embed = nn.Embedding(config.source_vocab_size, e, padding_idx=config.pad_id)
        self.target_embed = nn.Embedding(config.target_vocab_size, e, padding_idx=config.pad_id)
        self.encoder = nn.GRU(e, h, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * h, h)
        self.attention = (
            SoftAttention(h, 2 * h, score="additive", hidden_dim=config.attention_dim)
            if config.attention == "soft"
            else None
        )
        self.cell = nn.GRUCell(e + 2 * h, h)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(h + 2 * h + e, config.target_vocab_size)

    def encode(self, source: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run the encoder.

        Args:
            source: ``(B, T_in)`` token ids, padded on the right.
            lengths: ``(B,)`` real lengths, each >= 1.

        Returns:
            ``(memory (B, T_in, 2H), mask (B, T_in), final (B, 2H), state (B, H))``: the states
            ``h_j`` (zero on padding), the real-position mask, ``[h_fwd_last; h_bwd_first]`` and
            the decoder's initial state.
        """
        if source.ndim != 2:
            raise ValueError(f"source must be (B, T_in), got shape {tuple(source.shape)}")
        if lengths.shape != source.shape[:1]:
            raise ValueError(
                f"lengths must be (B,) = ({source.shape[0]},), got shape {tuple(lengths.shape)}"
            )
        if int(lengths.min()) < 1 or int(lengths.max()) > source.shape[1]:
            raise ValueError(
                f"lengths must be in [1, T_in = {source.shape[1]}], got "
                f"{int(lengths.min())}..{int(lengths.max())}"
            )
        steps = source.shape[1]
        embedded = self.dropout(self.source_embed(source))  # (B, T_in, E)
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        memory, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(memory, batch_first=True, total_length=steps)
        final = torch.cat([final[0], final[1]], dim=-1)  # (B, 2H)
        mask = torch.arange(steps, device=source.device) < lengths[:, None].to(source.device)
        return memory, mask, final, torch.tanh(self.bridge(final))

    def step(
        self, previous: Tensor, state: Tensor, memory: Tensor, mask: Tensor, final: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One decoder step.

        Args:
            previous: ``(B,)`` the previous output token ``y_{i-1}``.
            state: ``(B, H)`` ``s_{i-1}``.
            memory, mask, final: from :meth:`encode`.

        Returns:
            ``(logits (B, V), state s_i (B, H), alignment (B, T_in) or None)``.
        """
        embedded = self.dropout(self.target_embed(previous))  # (B, E)
        if self.attention is None:
            context, alignment = final, None
        else:
            read = self.attention(state, memory, mask=mask)
            context, alignment = read.output, read.weights  # (B, 2H), (B, T_in)
        state = self.cell(torch.cat([embedded, context], dim=-1), state)
        features = self.dropout(torch.cat([state, context, embedded], dim=-1))
        return self.out(features), state, alignment

    def forward(self, source: Tensor, lengths: Tensor, target: Tensor) -> Seq2SeqResult:
        """Teacher forcing: predict ``target[:, i]`` from ``<s>, target[:, :i]``.

        Args:
            source: ``(B, T_in)``.
            lengths: ``(B,)``.
            target: ``(B, T_out)`` the output tokens (ending in ``</s>``, padded).

        Returns:
            :class:`Seq2SeqResult` with logits ``(B, T_out, V)``.
        """
        memory, mask, final, state = self.encode(source, lengths)
        bos = torch.full_like(target[:, :1], self.config.bos_id)
        inputs = torch.cat([bos, target[:, :-1]], dim=1)  # (B, T_out)
        logits, alignments = [], []
        for i in range(target.shape[1]):
            step_logits, state, alignment = self.step(inputs[:, i], state, memory, mask, final)
            logits.append(step_logits)
            alignments.append(alignment)
        stacked = torch.stack(logits, dim=1)  # (B, T_out, V)
        return Seq2SeqResult(stacked, stacked.argmax(-1), _stack(alignments))

    @torch.no_grad()
    def generate(self, source: Tensor, lengths: Tensor, max_len: int) -> Seq2SeqResult:
        """Greedy decoding: feed back the argmax token until every row has emitted ``</s>``.

        Args:
            source: ``(B, T_in)``.
            lengths: ``(B,)``.
            max_len: at most this many output steps.

        Returns:
            :class:`Seq2SeqResult`: tokens ``(B, T)`` with ``T <= max_len``, padding after each
            row's ``</s>``; logits ``(B, T, V)``; alignments ``(B, T, T_in)`` or ``None``.
        """
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        memory, mask, final, state = self.encode(source, lengths)
        previous = torch.full_like(source[:, 0], self.config.bos_id)
        done = torch.zeros_like(previous, dtype=torch.bool)
        logits, tokens, alignments = [], [], []
        for _ in range(max_len):
            step_logits, state, alignment = self.step(previous, state, memory, mask, final)
            previous = step_logits.argmax(-1)  # (B,)
            tokens.append(previous.masked_fill(done, self.config.pad_id))
            logits.append(step_logits)
            alignments.append(alignment)
            done = done | (previous == self.config.eos_id)
            if bool(done.all()):
                break
        return Seq2SeqResult(
            torch.stack(logits, dim=1), torch.stack(tokens, dim=1), _stack(alignments)
        )


def _stack(alignments: list[Tensor | None]) -> Tensor | None:
    return None if alignments[0] is None else torch.stack(alignments, dim=1)  # (B, T_out, T_in)


def sequence_loss(
    logits: Tensor, target: Tensor, pad_id: int = 0, label_smoothing: float = 0.0
) -> Tensor:
    """Mean cross-entropy over the non-padding target tokens; ``logits (B, T, V)``,
    ``target (B, T)``."""
    return F.cross_entropy(
        logits.flatten(0, 1),
        target.flatten(),
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )


def exact_match(tokens: Tensor, target: Tensor, pad_id: int = 0) -> Tensor:
    """``(B,)`` boolean: the decoded ``tokens (B, T)`` equal ``target (B, T')`` up to and
    including ``</s>`` (both padded with ``pad_id`` after it)."""
    length = max(tokens.shape[1], target.shape[1])
    tokens = F.pad(tokens, (0, length - tokens.shape[1]), value=pad_id)
    target = F.pad(target, (0, length - target.shape[1]), value=pad_id)
    return (tokens == target).all(dim=1)


def __getattr__(name: str):
    return moved_name(__name__, name)  # dates_recipe moved to attnkit.tasks.dates
