"""Do the explanations find the evidence, and do the verdicts catch misleading attention?

A generated task whose evidence is known (:func:`attnkit.data.make_evidence_task`): each
sequence of random filler tokens holds one evidence word of its class at a random position; a
classifier reads the first token ([CLS]) after two attnkit self-attention layers. Two models,
same size and budget:

- normal: trained for the task only;
- decoupled: its decision also has a mean-pooled bypass, and an extra loss pushes the [CLS]
  attention of the last layer onto the final [END] token, so attention no longer shows what is used
  (in the spirit of Wiegreffe & Pinter 2019's adversarial attention).

For each explanation method: how often its top-ranked token is the evidence token (ranking
accuracy), Kendall's τ with leave-one-out over magnitudes and signed side by side with 95%
bootstrap intervals, and the verdict each convention gives (:func:`attnkit.interpret.judge`).

Then the classic set-up of Jain & Wallace (2019): a BiLSTM with additive attention pooling
(``text_recipe("soft", encoder="lstm")``) trained on the 40-token evidence task, and their
protocol on its test split (:func:`attnkit.interpret.replication.jain_wallace`: τ(attention,
gradient) and τ(attention, leave-one-out) as mean ± sd, ERASER, verdicts): the same table
``attnkit faithfulness`` writes.

    python benchmarks/faithfulness.py [--steps 400] [--examples 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))

import attnkit
from attnkit import MultiHeadAttention
from attnkit.data import make_evidence_task
from attnkit.htmlkit import format_interval, format_number, format_percent
from attnkit.interpret import judge, relevance, rollout
from attnkit.interpret.attribution import gradient_x_input, integrated_gradients, leave_one_out
from attnkit.interpret.faithfulness import CONVENTIONS
from attnkit.interpret.replication import jain_wallace
from attnkit.recording import intervene
from harness import RESULTS, machine, markdown_table, write_results

LENGTH, DIM = 12, 32


def make_task(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(tokens (n, LENGTH), labels (n,), evidence positions (n,)): one evidence word each,
    then an ``[END]`` token that is never evidence (the decoupled model's attention target)."""
    task = make_evidence_task(n, LENGTH - 1, words_per_class=1, fillers=29, seed=seed)
    tokens = torch.cat([task.tokens, torch.full((n, 1), END)], dim=1)
    return tokens, task.labels, task.evidence.int().argmax(-1)


END = 1 + 2 + 29  # after [CLS], one evidence word per class and the fillers
VOCAB = END + 1


class Classifier(nn.Module):
    """[CLS] classifier over two self-attention layers; ``bypass`` adds mean pooling."""

    def __init__(self, bypass: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.position = nn.Parameter(torch.randn(LENGTH, DIM) * 0.1)
        self.layers = nn.ModuleList(MultiHeadAttention(DIM, 4) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(DIM) for _ in range(2))
        self.head = nn.Linear(DIM, 2)
        self.bypass = nn.Linear(DIM, 2) if bypass else None

    def forward(self, embeddings: Tensor, mask: Tensor) -> Tensor:
        x = embeddings + self.position
        for attention, norm in zip(self.layers, self.norms, strict=True):
            x = x + attention(norm(x), mask=mask).output
        logits = self.head(x[:, 0])
        if self.bypass is not None:
            pooled = (embeddings * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            logits = logits + self.bypass(pooled)
        return logits


def train(model: Classifier, tokens: Tensor, labels: Tensor, steps: int, decouple: bool) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = torch.randint(0, len(tokens), (64,), generator=gen)
        embeddings = model.embed(tokens[batch])
        kept: list[Tensor] = []

        def keep(_: str, weights: Tensor, kept: list[Tensor] = kept) -> Tensor:
            kept.append(weights)  # the weights stay in the graph: the loss below can use them
            return weights

        with intervene(model, keep, layers=["layers.1"]):
            loss = F.cross_entropy(model(embeddings, mask[batch]), labels[batch])
        if decouple:
            # the last layer's [CLS] attention should sit on [END], never evidence
            cls_row = kept[0][:, :, 0]  # (B, H, N)
            loss = loss - cls_row[..., -1].clamp_min(1e-6).log().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def evaluate(model: Classifier, tokens: Tensor, labels: Tensor, positions: Tensor) -> dict:
    model.eval()
    mask = torch.ones_like(tokens, dtype=torch.bool)
    embeddings = model.embed(tokens).detach()
    with attnkit.capture(model, grad=True) as rec:
        logits = model(embeddings, mask)
        predicted = logits.argmax(-1)
        logits.gather(1, predicted[:, None]).sum().backward()
    accuracy = (predicted == labels).float().mean().item()
    weights, grads = rec.weights, rec.grads
    scores = {
        "last-layer attention": weights["layers.1"].mean(1)[:, 0],
        "rollout": rollout(weights)[:, 0],
        "relevance": relevance(weights, grads)[:, 0],
        "gradient x input": gradient_x_input(model, embeddings, mask, predicted),
        "integrated gradients": integrated_gradients(model, embeddings, mask, predicted),
    }
    for name in ("last-layer attention", "rollout", "relevance"):  # [CLS] itself is not evidence
        scores[name] = scores[name].clone()
        scores[name][:, 0] = 0.0
    reference = leave_one_out(model, embeddings, mask, predicted)
    with torch.no_grad():
        verdicts = {
            convention: judge(
                model,
                embeddings,
                mask,
                predicted,
                scores,
                ("leave-one-out", reference),
                convention=convention,
            )
            for convention in CONVENTIONS
        }
    scores["leave-one-out"] = reference
    found = {
        name: (value.argmax(-1) == positions).float().mean().item()
        for name, value in scores.items()
    }
    return {"accuracy": accuracy, "found": found, "verdicts": verdicts}


def run(steps: int, examples: int, seed: int) -> dict:
    torch.manual_seed(seed)
    train_set = make_task(2000, seed)
    test_set = make_task(examples, seed + 1)
    results = {}
    for name, decouple in (("normal", False), ("decoupled", True)):
        torch.manual_seed(seed)
        model = Classifier(bypass=decouple)
        train(model, train_set[0], train_set[1], steps, decouple)
        results[name] = evaluate(model, *test_set)
    return results


def classic(examples: int, seed: int, epochs: int):
    """BiLSTM + additive attention on the 40-token evidence task; Jain & Wallace's protocol on
    ``examples`` test sentences."""
    from attnkit.interpret.loading import WordTokenizer
    from attnkit.tasks import text_recipe
    from attnkit.train import TrainConfig, Trainer

    recipe = text_recipe("soft", seed=seed, n=3000, length=40, classes=2, encoder="lstm",
                         embed_dim=32, hidden=32, attention_dim=32)  # fmt: skip
    config = TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, seed=seed, progress=False)
    trainer = Trainer(recipe.model, config, loss=recipe.loss, metrics=recipe.metrics)
    fit = trainer.fit(recipe.train, recipe.val, recipe.test)
    test = recipe.test
    texts = [test.text(i) for i in range(min(examples, len(test)))]
    tokenizer = WordTokenizer(test.vocabulary.tokens, lowercase=False)
    table, _ = jain_wallace(
        recipe.model,
        tokenizer,
        texts,
        seed=seed,
        title="Jain & Wallace's protocol: BiLSTM + additive attention, evidence task",
        notes=(
            f"{len(recipe.train)} training sentences of 40 tokens, 2 classes, {epochs} epochs; "
            f"test accuracy {fit.test['accuracy']:.3f}",
        ),
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=4, help="BiLSTM training epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the JSON here instead of results/")
    parser.add_argument(
        "--no-classic", action="store_true", help="skip the BiLSTM (Jain & Wallace) part"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = run(args.steps, args.examples, args.seed)
    rows, records = [], {}
    for model, result in results.items():
        signed = {v.method: v for v in result["verdicts"]["signed"]}
        for verdict in result["verdicts"]["magnitude"]:
            other = signed[verdict.method]
            rows.append(
                [
                    model,
                    verdict.method,
                    f"{result['found'][verdict.method]:.2f}",
                    f"{format_number(verdict.tau)} {format_interval(verdict.tau_interval)}",
                    f"{format_number(other.tau)} {format_interval(other.tau_interval)}",
                    f"{format_percent(verdict.gain)} "
                    f"{format_interval(verdict.gain_interval, percent=True)}",
                    verdict.label,
                    other.label,
                ]
            )
        rows.append(
            [model, "leave-one-out (reference)", f"{result['found']['leave-one-out']:.2f}",
             "", "", "", "", ""]
        )  # fmt: skip
        records[model] = {
            "accuracy": result["accuracy"],
            "evidence_found": result["found"],
            "verdicts": {
                convention: [
                    {k: v for k, v in vars(x).items() if k != "examples"}
                    | {"sentence": x.sentence, "label": x.label, "gain": x.gain}
                    for x in verdicts
                ]
                for convention, verdicts in result["verdicts"].items()
            },
        }
    table_classic = None if args.no_classic else classic(args.examples, args.seed, args.epochs)
    if table_classic is not None and not args.json:
        table_classic.plot(RESULTS / "faithfulness_lstm.png")
    info = machine()
    accuracy = ", ".join(f"{m} {r['accuracy']:.3f}" for m, r in results.items())
    title = (
        f"Evidence task ({LENGTH} tokens, one evidence token), {args.steps} steps, "
        f"n={args.examples} test examples, seed {args.seed}; test accuracy: {accuracy}; "
        f"{info['cpu']}, {info['threads']} threads, torch {info['torch']}; {info['date']}"
    )
    headers = [
        "model", "method", "evidence ranked first", "τ(|scores|) vs LOO [95%]",
        "τ(signed) vs LOO [95%]", "gain [95%]", "verdict (τ over \\|scores\\|)",
        "verdict (signed τ)",
    ]  # fmt: skip
    table = "\n\n".join(
        [
            title,
            markdown_table(headers, rows).replace("τ(|scores|)", "τ(\\|scores\\|)"),
            "" if table_classic is None else table_classic.markdown().replace("# ", "## ", 1),
        ]
    )
    print(table)
    settings = {
        "steps": args.steps, "examples": args.examples, "seed": args.seed, "epochs": args.epochs,
    }  # fmt: skip
    payload = {
        "machine": info,
        "settings": settings,
        "results": records,
        "bilstm_jain_wallace": None if table_classic is None else table_classic.to_json(),
    }
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2))
    else:
        print(f"\nwrote {write_results('faithfulness', payload, table)}")


if __name__ == "__main__":
    main()
