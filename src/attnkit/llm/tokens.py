"""The text of each token of a sequence, as every page shows it (the eval report, the dashboard).

A token decoded alone loses what its neighbours give it: a SentencePiece token drops its leading
space, and a byte-level BPE token that holds half of a UTF-8 character decodes to a replacement
character. :func:`token_texts` decodes each token after the few tokens before it and keeps what
it adds, so that the texts of consecutive tokens join into the decoded sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["token_texts"]


def token_texts(ids: Sequence[int], tokenizer=None, window: int = 6) -> list[str]:
    """Each token's text with the spacing the tokenizer gives it in context.

    Args:
        ids: ``(T,)`` token ids of one sequence (a list, or a 1-D tensor's ``tolist()``).
        tokenizer: anything with ``decode(list_of_ids) -> str`` (a Hugging Face tokenizer);
            ``None`` gives each id as text.
        window: tokens decoded before each one, its context.

    Returns:
        ``T`` strings: what decoding token ``i`` adds to the ``window`` tokens before it; a
        token whose prefix does not decode stably (or that adds nothing) is decoded alone.
    """
    ids = [int(i) for i in ids]
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if tokenizer is None:
        return [str(i) for i in ids]
    texts = []
    for i in range(len(ids)):
        before = tokenizer.decode(ids[max(0, i - window) : i]) if i else ""
        current = tokenizer.decode(ids[max(0, i - window) : i + 1])
        text = current[len(before) :] if current.startswith(before) else ""
        texts.append(text or tokenizer.decode(ids[i : i + 1]))
    return texts
