"""Attribution of generated tokens: for each token of an answer, how much each prompt token
mattered, by several methods, and whether each method can be trusted on this model and prompt.

For a Hugging Face causal LM or encoder-decoder (T5, BART: the prompt is the encoder's input),
a prompt of ``P`` tokens and an answer of ``n`` tokens (given, or generated greedily), every
method gives ``(n, P)`` scores, row ``t`` explaining answer token ``t`` (its logit, or its
probability for leave-one-out) from the prompt, with the answer's earlier tokens kept as they are:

- ``"attention"``: the last layer's weights of the query that predicts token ``t`` on the prompt,
  mean over heads (per head in :attr:`Attribution.head_scores`, ``(n, H, P)``; encoder-decoder:
  the last cross-attention);
- ``"rollout"``: attention rollout (Abnar & Zuidema 2020) over all layers, same row
  (encoder-decoder: the last cross-attention carried through the encoder's rollout);
- ``"gradient x input"`` (Shrikumar et al. 2016) and ``"integrated gradients"`` (Sundararajan et
  al. 2017, captum; from all-zero prompt embeddings, the answer's embeddings fixed) of the token's
  logit with respect to the prompt's token embeddings, summed over the embedding;
- ``"leave-one-out"`` (Li et al. 2016): the drop in the token's probability when one prompt token
  is hidden from attention;
- ``"sentence leave-one-out"``: the same, hiding one sentence of the context at a time (every
  token of a sentence gets its sentence's drop; the per-sentence drops are in
  :attr:`Attribution.sentence_scores`).

Faithfulness on the answer's probability (ERASER, DeYoung et al. 2020, through
:func:`attnkit.interpret.faithfulness.eraser`): each answer token is one example; each method's
comprehensiveness and sufficiency are set against a random ranking and against leave-one-out,
with ``n`` (the answer's tokens) and 95% bootstrap intervals over them, and Kendall's τ with
leave-one-out (:func:`attnkit.interpret.faithfulness.rank_agreement`). A method is *trusted*
when the lower end of its gain's interval reaches :data:`attnkit.interpret.verdicts.MIN_GAIN`
and τ > 0, *flagged*
when the upper end stays below it, and *inconclusive* otherwise, when leave-one-out itself beats
random by less than :data:`~attnkit.interpret.verdicts.MIN_SPAN`, or for a one-token answer (no
interval).

A hidden token is masked out of attention (``attention_mask`` 0) at its own position; positions
of the other tokens do not move.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from attnkit.interpret.attention_rollout import rollout
from attnkit.interpret.attribution import gradient_x_input, integrated_gradients, leave_one_out
from attnkit.interpret.faithfulness import BINS, eraser, rank_agreement
from attnkit.interpret.verdicts import MIN_GAIN, MIN_SPAN
from attnkit.recording import capture

__all__ = ["METHODS", "Attribution", "FaithfulnessVerdict", "attribute", "load_generator"]

METHODS = (
    "attention",
    "rollout",
    "gradient x input",
    "integrated gradients",
    "leave-one-out",
    "sentence leave-one-out",
)
REFERENCE = "leave-one-out"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class FaithfulnessVerdict:
    """One method's ERASER numbers over the answer's ``n`` tokens, with 95% bootstrap intervals."""

    method: str
    reference: str
    n: int  # answer tokens (examples)
    comprehensiveness: float  # AOPC, mean over tokens: higher = its top tokens matter
    comprehensiveness_interval: tuple[float, float]
    sufficiency: float  # AOPC: lower = its top tokens suffice
    sufficiency_interval: tuple[float, float]
    random_comprehensiveness: float
    reference_comprehensiveness: float
    gain: float  # (comprehensiveness - random) / (reference - random)
    gain_interval: tuple[float, float]
    tau: float  # mean Kendall's tau with the reference over tokens (NaN where undefined)
    verdict: str  # "trusted", "flagged" or "inconclusive"

    @property
    def sentence(self) -> str:
        low, high = self.gain_interval
        numbers = (
            f"removing its top prompt tokens does {self.gain:.0%} (95% CI {low:.0%} to {high:.0%},"
            f" n = {self.n} answer tokens) of what removing {self.reference}'s does "
            f"(comprehensiveness {self.comprehensiveness:.3f}, random "
            f"{self.random_comprehensiveness:.3f}, {self.reference} "
            f"{self.reference_comprehensiveness:.3f}; τ = {self.tau:.2f})"
        )
        if self.verdict == "trusted":
            return f"{self.method} points at what the answer uses: {numbers}"
        if self.verdict == "flagged":
            return f"{self.method} does not point at what the answer uses: {numbers}"
        return f"{self.method}: no verdict: {numbers}"


@dataclass(frozen=True)
class Attribution:
    """Scores of the prompt's tokens for each answer token, and the methods' verdicts.

    Attributes:
        prompt_tokens, answer_tokens: the ``P`` and ``n`` tokens' text.
        prompt_ids, answer_ids: ``(P,)`` and ``(n,)``.
        scores: ``{method: (n, P)}``.
        head_scores: ``(n, H, P)`` last-layer attention per head.
        probabilities: ``(n,)`` each answer token's probability given the full prompt.
        sentences: ``[(start, stop)]`` token spans of the context's sentences.
        sentence_scores: ``(n, S)`` probability drop when each sentence is hidden.
        verdicts: one per method other than the reference, in :data:`METHODS` order.
    """

    prompt_tokens: list[str]
    answer_tokens: list[str]
    prompt_ids: Tensor
    answer_ids: Tensor
    scores: dict[str, Tensor]
    head_scores: Tensor
    probabilities: Tensor
    sentences: list[tuple[int, int]]
    sentence_scores: Tensor
    verdicts: list[FaithfulnessVerdict] = field(default_factory=list)

    def report(self, title: str = "attnkit attribution") -> str:
        """A self-contained HTML page of the notebook view (opens from disk, no network)."""
        from attnkit.htmlkit import escape, page
        from attnkit.views.attribution import attribution_view

        body = f"<h1>{escape(title)}</h1>{attribution_view(self).html}"
        return page(title, body, scripts=True)

    def _repr_html_(self) -> str:
        from attnkit.views.attribution import attribution_view

        return attribution_view(self).html


def load_generator(path: str | Path) -> tuple[nn.Module, object] | None:
    """The Hugging Face causal LM or encoder-decoder saved in directory ``path``, with its
    tokenizer; ``None`` when ``path`` holds another kind of model (a classifier) or no model.

    A model is generative when its ``config.json`` names an architecture ending in
    ``ForCausalLM`` or ``ForConditionalGeneration``, or says ``is_encoder_decoder``.
    """
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    seq2seq = bool(config.get("is_encoder_decoder"))
    causal = any(name.endswith("ForCausalLM") for name in architectures)
    if not (
        seq2seq or causal or any(a.endswith("ForConditionalGeneration") for a in architectures)
    ):
        return None
    import transformers

    auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(path, attn_implementation="sdpa")
    return model.eval(), transformers.AutoTokenizer.from_pretrained(path)


def _check_model(model: nn.Module) -> None:
    config = getattr(model, "config", None)
    if not isinstance(model, nn.Module) or config is None or not hasattr(model, "generate"):
        raise TypeError(
            f"model must be a Hugging Face causal LM (AutoModelForCausalLM) or encoder-decoder "
            f"(AutoModelForSeq2SeqLM), got {type(model).__name__}"
        )


def _sentences(tokenizer, prompt: str, context: str | None, length: int) -> list[tuple[int, int]]:
    """Token spans of the context's sentences (the whole prompt's when no context is given)."""
    text = prompt if context is None else context
    offset = 0 if context is None else prompt.find(context)
    if offset < 0:
        raise ValueError(f"context must be a substring of the prompt, got {context!r:.80}")
    encoded = tokenizer(prompt, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    spans, start = [], 0
    for piece in [*_SENTENCE_END.split(text)]:
        begin = text.find(piece, start)
        start = begin + len(piece)
        lo, hi = offset + begin, offset + begin + len(piece)
        inside = [i for i, (a, b) in enumerate(offsets) if b > lo and a < hi and b > a]
        if piece.strip() and inside:
            spans.append((inside[0], inside[-1] + 1))
    if not spans:
        spans = [(0, length)]
    return spans


def attribute(
    model: nn.Module,
    tokenizer,
    prompt: str,
    answer: str | None = None,
    context: str | None = None,
    max_new_tokens: int = 16,
    steps: int = 32,
    seed: int = 0,
    resamples: int = 1000,
) -> Attribution:
    """Attribute each answer token to the prompt's tokens, by every method of :data:`METHODS`.

    Args:
        model: a Hugging Face causal LM or encoder-decoder (``sdpa`` or ``eager``).
        tokenizer: its tokenizer (a fast one when ``context`` is given: offsets map sentences).
        prompt: the prompt's text.
        answer: the answer's text (tokenized without special tokens and appended to the
            prompt's tokens); default: generated greedily, up to ``max_new_tokens`` tokens or
            the first end-of-sequence token (not kept).
        context: the substring of the prompt whose sentences ``"sentence leave-one-out"``
            hides one at a time; default the whole prompt.
        steps: integrated-gradients steps.
        seed: for the random ranking of the faithfulness baseline and the bootstrap.
        resamples: bootstrap resamples of the answer's tokens for the intervals.

    Returns:
        An :class:`Attribution` (displays itself in a notebook).

    Example::

        result = attribute(model, tokenizer, "context: paris is in france. q: where is paris?",
                           answer=" france", context="paris is in france.")
        result.scores["integrated gradients"]   # (n, P)
    """
    _check_model(model)
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r:.80}")
    model.eval()
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    prompt_ids = tokenizer(prompt, return_tensors="pt")["input_ids"][0]
    length = len(prompt_ids)
    if answer is None:
        with torch.no_grad():
            output = model.generate(
                input_ids=prompt_ids[None].to(model.device),
                attention_mask=torch.ones(1, length, dtype=torch.long, device=model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
            )
        answer_ids = output[0, 1 if seq2seq else length :].cpu()  # seq2seq: after the start
        eos = model.generation_config.eos_token_id
        ends = set() if eos is None else set(eos if isinstance(eos, list) else [eos])
        stop = next((i for i, t in enumerate(answer_ids.tolist()) if t in ends), len(answer_ids))
        answer_ids = answer_ids[:stop]
    else:
        if not isinstance(answer, str):
            raise TypeError(f"answer must be a string or None, got {type(answer).__name__}")
        answer_ids = torch.tensor(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if len(answer_ids) == 0:
        raise ValueError("the answer has no tokens (empty answer, or generation ended at once)")
    n = len(answer_ids)
    build = _encoder_decoder if seq2seq else _decoder_only
    classifier, prompt_embeddings, probabilities, head_scores, rolled = build(
        model, prompt_ids.to(model.device), answer_ids.to(model.device)
    )
    forward = classifier(torch.arange(n))
    embeddings = prompt_embeddings.expand(n, -1, -1).contiguous()  # (n, P, E)
    visible = torch.ones(n, length, dtype=torch.bool, device=embeddings.device)
    target = answer_ids.to(embeddings.device)
    scores: dict[str, Tensor] = {"attention": head_scores.mean(1), "rollout": rolled}
    scores["gradient x input"] = gradient_x_input(forward, embeddings, visible, target).cpu()
    scores["integrated gradients"] = integrated_gradients(
        forward, embeddings, visible, target, steps
    ).cpu()
    scores[REFERENCE] = leave_one_out(forward, embeddings, visible, target).cpu()
    sentences = _sentences(tokenizer, prompt, context, length)
    sentence_scores = torch.zeros(n, len(sentences))
    with torch.no_grad():
        full = forward(embeddings, visible).float().softmax(-1).gather(1, target[:, None])[:, 0]
        for s, (start, stop) in enumerate(sentences):
            hidden = visible.clone()
            hidden[:, start:stop] = False
            probs = forward(embeddings, hidden).float().softmax(-1).gather(1, target[:, None])
            sentence_scores[:, s] = (full - probs[:, 0]).cpu()
    by_sentence = torch.zeros(n, length)
    for s, (start, stop) in enumerate(sentences):
        by_sentence[:, start:stop] = sentence_scores[:, s : s + 1]
    scores["sentence leave-one-out"] = by_sentence
    scores = {name: scores[name] for name in METHODS}
    verdicts = _verdicts(classifier, embeddings, visible, target, scores, seed, resamples)
    return Attribution(
        prompt_tokens=[tokenizer.decode([i]) for i in prompt_ids.tolist()],
        answer_tokens=[tokenizer.decode([i]) for i in answer_ids.tolist()],
        prompt_ids=prompt_ids,
        answer_ids=answer_ids,
        scores=scores,
        head_scores=head_scores,
        probabilities=probabilities.cpu(),
        sentences=sentences,
        sentence_scores=sentence_scores,
        verdicts=verdicts,
    )


def _rows_of(rows: Tensor, batch: int, device) -> Tensor:
    """The answer token of each of ``batch`` rows: ``rows[r % len(rows)]`` (captum repeats the
    batch along its integration steps)."""
    return rows.to(device)[torch.arange(batch, device=device) % len(rows)]


def _decoder_only(model: nn.Module, prompt_ids: Tensor, answer_ids: Tensor):
    """A causal LM: one sequence, prompt then answer; token ``t`` is read at ``P - 1 + t``."""
    length, n = len(prompt_ids), len(answer_ids)
    sequence = torch.cat([prompt_ids, answer_ids])  # (N,)
    embed = model.get_input_embeddings()
    with torch.no_grad():
        prompt_embeddings = embed(sequence[:length]).detach()  # (P, E)
        answer_embeddings = embed(sequence[length:]).detach()  # (n, E)

    def classifier(rows: Tensor):
        """``forward(embeddings (B, P, E), visible (B, P)) -> logits (B, V)``."""

        def forward(embeddings: Tensor, visible: Tensor) -> Tensor:
            batch = embeddings.shape[0]
            tail = answer_embeddings.expand(batch, -1, -1)  # (B, n, E)
            inputs = torch.cat([embeddings, tail.to(embeddings.dtype)], 1)  # (B, N, E)
            mask = torch.cat([visible, visible.new_ones(batch, n)], 1).long()  # (B, N)
            logits = model(inputs_embeds=inputs, attention_mask=mask).logits  # (B, N, V)
            which = _rows_of(rows, batch, logits.device)
            return logits[torch.arange(batch, device=logits.device), length - 1 + which]

        return forward

    with torch.no_grad(), capture(model, weights=True) as rec:
        logits = model(input_ids=sequence[None]).logits[0]  # (N, V)
    rows = torch.arange(length - 1, length - 1 + n)
    probabilities = logits[rows].float().softmax(-1).gather(1, answer_ids[:, None])[:, 0]
    weights = {k: v.float().cpu() for k, v in rec.weights.items()}
    last = list(weights.values())[-1][0]  # (H, N, N)
    head_scores = last[:, rows, :length].permute(1, 0, 2).contiguous()  # (n, H, P)
    rolled = rollout(weights)[0, rows, :length]  # (n, P)
    return classifier, prompt_embeddings, probabilities.cpu(), head_scores, rolled


def _encoder_decoder(model: nn.Module, prompt_ids: Tensor, answer_ids: Tensor):
    """An encoder-decoder: the prompt is the encoder's input, the answer the decoder's (after the
    decoder start token); attention is the last cross-attention, rollout the last
    cross-attention carried through the encoder's rollout (``A_cross R_enc``, as
    :func:`attnkit.interpret.explain` carries an attention pooling through the encoder)."""
    length, n = len(prompt_ids), len(answer_ids)
    start = model.config.decoder_start_token_id
    if start is None:
        raise ValueError("model.config.decoder_start_token_id must be set for an encoder-decoder")
    decoder_ids = torch.cat([answer_ids.new_tensor([start]), answer_ids[:-1]])  # (n,)
    with torch.no_grad():
        prompt_embeddings = model.get_input_embeddings()(prompt_ids).detach()  # (P, E)

    def classifier(rows: Tensor):
        """``forward(embeddings (B, P, E), visible (B, P)) -> logits (B, V)``."""

        def forward(embeddings: Tensor, visible: Tensor) -> Tensor:
            batch = embeddings.shape[0]
            logits = model(
                inputs_embeds=embeddings,
                attention_mask=visible.long(),
                decoder_input_ids=decoder_ids.expand(batch, -1),
            ).logits  # (B, n, V)
            which = _rows_of(rows, batch, logits.device)
            return logits[torch.arange(batch, device=logits.device), which]

        return forward

    with torch.no_grad(), capture(model, weights=True) as rec:
        logits = model(input_ids=prompt_ids[None], decoder_input_ids=decoder_ids[None]).logits[0]
    probabilities = logits.float().softmax(-1).gather(1, answer_ids[:, None])[:, 0]  # (n,)
    weights = {k: v.float().cpu() for k, v in rec.weights.items()}
    cross = [w for w in weights.values() if w.shape[-2:] == (n, length) and n != length]
    square = [w for w in weights.values() if w.shape[-2:] == (length, length)]
    if not cross or not square:
        raise ValueError(
            f"could not tell the cross-attention ({n} answer x {length} prompt tokens) and the "
            f"encoder's self-attention apart in {[tuple(w.shape) for w in weights.values()]}: "
            "use a prompt and an answer of different lengths"
        )
    head_scores = cross[-1][0].permute(1, 0, 2).contiguous()  # (n, H, P)
    rolled = head_scores.mean(1) @ rollout(square)[0]  # (n, P)
    return classifier, prompt_embeddings, probabilities.cpu(), head_scores, rolled


def _per_token(classifier, embeddings, visible, target, importance) -> tuple[Tensor, Tensor]:
    """ERASER comprehensiveness and sufficiency AOPC of each answer token alone: two ``(n,)``."""
    comprehensive, sufficient = [], []
    for t in range(len(target)):
        one = slice(t, t + 1)
        scores = eraser(
            classifier(torch.tensor([t])),
            embeddings[one],
            visible[one],
            target[one],
            importance[one].to(embeddings.device),
            BINS,
        )
        comprehensive.append(scores.comprehensiveness_aopc)
        sufficient.append(scores.sufficiency_aopc)
    return torch.tensor(comprehensive, dtype=torch.float64), torch.tensor(
        sufficient, dtype=torch.float64
    )


def _interval(samples: Tensor, n: int) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap ``samples`` ``(resamples,)`` over ``n`` answer
    tokens; NaN for one token, where resampling has nothing to vary."""
    finite = samples[torch.isfinite(samples)]
    if finite.numel() == 0 or n < 2:
        return (float("nan"), float("nan"))
    low, high = torch.quantile(finite, torch.tensor([0.025, 0.975], dtype=finite.dtype))
    return (float(low), float(high))


def _verdicts(classifier, embeddings, visible, target, scores, seed, resamples):
    n = len(target)
    generator = torch.Generator().manual_seed(seed)
    random_scores = torch.rand(visible.shape, generator=generator)
    random_comp, _ = _per_token(classifier, embeddings, visible, target, random_scores)
    reference_comp, _ = _per_token(classifier, embeddings, visible, target, scores[REFERENCE])
    draws = torch.randint(0, n, (resamples, n), generator=generator)  # bootstrap over tokens
    verdicts = []
    for method, importance in scores.items():
        if method == REFERENCE:
            continue
        comp, suff = _per_token(classifier, embeddings, visible, target, importance)

        def gain(index: Tensor, comp: Tensor = comp) -> Tensor:
            span = reference_comp[index].mean(-1) - random_comp[index].mean(-1)
            value = (comp[index].mean(-1) - random_comp[index].mean(-1)) / span
            return value.where(span > 0, torch.nan)

        span = float(reference_comp.mean() - random_comp.mean())
        point = float(gain(torch.arange(n)))
        low, high = _interval(gain(draws), n)
        tau = rank_agreement(importance, scores[REFERENCE], visible.cpu()).mean_tau
        if span < MIN_SPAN or low != low:  # NaN: no interval
            verdict = "inconclusive"
        elif low >= MIN_GAIN and tau > 0:
            verdict = "trusted"
        elif high < MIN_GAIN:
            verdict = "flagged"
        else:
            verdict = "inconclusive"
        verdicts.append(
            FaithfulnessVerdict(
                method=method,
                reference=REFERENCE,
                n=n,
                comprehensiveness=float(comp.mean()),
                comprehensiveness_interval=_interval(comp[draws].mean(-1), n),
                sufficiency=float(suff.mean()),
                sufficiency_interval=_interval(suff[draws].mean(-1), n),
                random_comprehensiveness=float(random_comp.mean()),
                reference_comprehensiveness=float(reference_comp.mean()),
                gain=point if span > 0 else float("nan"),
                gain_interval=(low, high),
                tau=tau,
                verdict=verdict,
            )
        )
    return verdicts
