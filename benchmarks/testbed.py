"""Lookback Lens on an honest testbed: key–value retrieval answered by small CausalLMs.

Two models of the same shape (2 layers x 4 heads, so their lookback-ratio features align) but
different width (``--dims``, default 64 and 96) are trained by attnkit on present-key questions
(``attnkit.llm.testbed``), saved and loaded back through Hugging Face ``from_pretrained``. Greedy
answers to fresh questions, half of them about absent keys, are labelled ``grounded`` / ``wrong``
/ ``invented`` (1 = not grounded). Reported, as mean ± std over ``--seeds`` (each seed draws a new
question set and a new two-fold split):

- AUROC of two-fold detection: Lookback Lens on span features (the whole answer) and on sliding
  windows of 8 and 4 tokens (a window carries its answer's label; an answer's windows stay in one
  fold), the mean-LR-over-all-heads baseline, and the model's own token probability (mean
  log-probability of the answer tokens, lower = more suspect; no fitting);
- transfer: a span detector fit on one model's answers and tested on the other's;
- guided decoding (Lookback Lens §4): ``k`` candidate chunks of ``n`` tokens, sampled at
  temperature ``T``, the one the window detector (window = ``n``) rates most grounded kept; against
  greedy decoding and plain sampling at the same ``T``: the share of wrong answers on present keys
  and of ungrounded answers overall (an answer to an absent key is always invented: the models
  never learned to abstain).

    python benchmarks/testbed.py [--examples 300] [--seeds 5] [--steps 700] [--guided 120]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.llm.detector import LookbackLens
from attnkit.llm.guided import guided_generate
from attnkit.llm.testbed import (
    TaskConfig,
    TrainConfig,
    detector_inputs,
    label_answer,
    load_testbed,
    make_examples,
    run_examples,
    save_testbed,
    train_model,
)
from harness import machine, markdown_table, write_results


def fold_auroc(scores: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """AUROC of fixed scores on the test halves of the same two-fold split the detectors use."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    folds = splitter.split(scores[:, None], labels)
    return float(np.mean([roc_auc_score(labels[test], scores[test]) for _, test in folds]))


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}


def cell(summary: dict[str, float]) -> str:
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def detection(labelled, seed: int) -> dict[str, float]:
    """Every detector's two-fold AUROC on one labelled question set."""
    span, labels, _ = detector_inputs(labelled)
    result = {
        "lookback lens (span)": LookbackLens().cross_validated_auroc(span, labels, seed=seed),
        "mean-LR baseline (span)": LookbackLens(mean_baseline=True).cross_validated_auroc(
            span, labels, seed=seed
        ),
        "token probability": fold_auroc(
            -np.array([item.log_prob for item in labelled]), labels, seed
        ),
    }
    for window in (8, 4):
        features, window_labels, groups = detector_inputs(labelled, window=window)
        result[f"lookback lens (window {window})"] = LookbackLens().cross_validated_auroc(
            features, window_labels, seed=seed, groups=groups
        )
    return result


def guided_rates(model, tokenizer, examples, detector, args) -> dict[str, dict[str, float]]:
    """Wrong (present keys) and ungrounded (all) rates of greedy, sampled and guided answers."""
    verdicts: dict[str, list[str]] = {"greedy": [], "sampling": [], "guided": []}
    for i, example in enumerate(examples):
        encoded = tokenizer(example.prompt, return_tensors="pt")
        with torch.no_grad():
            greedy = model.generate(**encoded, max_new_tokens=12, do_sample=False)
            torch.manual_seed(i)
            sampled = model.generate(
                **encoded, max_new_tokens=12, do_sample=True, temperature=args.temperature
            )
        length = encoded["input_ids"].shape[1]
        verdicts["greedy"].append(label_answer(example, tokenizer.decode(greedy[0, length:])))
        verdicts["sampling"].append(label_answer(example, tokenizer.decode(sampled[0, length:])))
        result = guided_generate(
            model, tokenizer, example.prompt, example.context, detector,
            num_candidates=args.candidates, chunk_size=args.chunk, max_new_tokens=12,
            temperature=args.temperature, seed=i,
        )  # fmt: skip
        verdicts["guided"].append(label_answer(example, result.text))
    present = [e.present for e in examples]
    rates = {}
    for name, found in verdicts.items():
        on_present = [v for v, p in zip(found, present, strict=True) if p]
        rates[name] = {
            "wrong on present keys": sum(v == "wrong" for v in on_present) / len(on_present),
            "ungrounded overall": sum(v != "grounded" for v in found) / len(found),
        }
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs=2, default=[64, 96])
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--guided", type=int, default=120)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = TaskConfig()

    models, training = {}, {}
    workdir = Path(tempfile.mkdtemp(prefix="attnkit-testbed-"))
    for dim in args.dims:
        config = TrainConfig(dim=dim, hidden_dim=2 * dim, steps=args.steps)
        start = time.perf_counter()
        lm, losses = train_model(task, config, seed=0)
        seconds = time.perf_counter() - start
        name = f"d{dim}"
        models[name] = load_testbed(save_testbed(lm, task, workdir / name))[:2]
        params = sum(p.numel() for p in lm.parameters())
        training[name] = {"dim": dim, "layers": config.num_layers, "heads": config.num_heads,
                          "parameters": params, "steps": config.steps, "seconds": seconds,
                          "loss first 50": statistics.fmean(losses[:50]),
                          "loss last 50": statistics.fmean(losses[-50:])}  # fmt: skip
        print(f"trained {name}: {seconds:.0f} s, loss {training[name]['loss last 50']:.3f}")

    labelled = {name: {} for name in models}
    verdicts = {}
    for name, (model, tokenizer) in models.items():
        for seed in range(args.seeds):
            examples = make_examples(args.examples, task, seed=1000 + seed)
            labelled[name][seed] = run_examples(model, tokenizer, examples)
        every = [item for items in labelled[name].values() for item in items]
        verdicts[name] = {
            f"{kind} ({'present' if present else 'absent'})": sum(
                item.verdict == kind and item.example.present == present for item in every
            )
            for kind, present in (("grounded", True), ("wrong", True), ("invented", False))
        }

    aurocs = {}
    for name in models:
        per_seed = [detection(labelled[name][seed], seed) for seed in range(args.seeds)]
        aurocs[name] = {key: mean_std([r[key] for r in per_seed]) for key in per_seed[0]}

    first, second = list(models)
    transfer = {}
    for source, target in ((first, second), (second, first)):
        scores = []
        for seed in range(args.seeds):
            x, y, _ = detector_inputs(labelled[source][seed])
            tx, ty, _ = detector_inputs(labelled[target][seed])
            scores.append(LookbackLens().fit(x, y).auroc(tx, ty))
        transfer[f"{source} -> {target}"] = mean_std(scores)

    guided = {}
    for name, (model, tokenizer) in models.items():
        every = [item for items in labelled[name].values() for item in items]
        x, y, _ = detector_inputs(every, window=args.chunk)
        detector = LookbackLens().fit(x, y)
        examples = make_examples(args.guided, task, seed=7)
        start = time.perf_counter()
        guided[name] = guided_rates(model, tokenizer, examples, detector, args)
        print(f"guided decoding {name}: {time.perf_counter() - start:.0f} s")

    detectors = list(aurocs[first])
    headers = ["detector", *(f"AUROC {name}" for name in models)]
    auroc_rows = [[d, *(cell(aurocs[name][d]) for name in models)] for d in detectors]
    train_rows = [[name, t["dim"], f"{t['layers']} x {t['heads']}", t["parameters"], t["steps"],
                   f"{t['seconds']:.0f}", f"{t['loss last 50']:.3f}",
                   *verdicts[name].values()] for name, t in training.items()]  # fmt: skip
    transfer_rows = [
        [pair, cell(score), cell(aurocs[pair.split(" -> ")[1]]["lookback lens (span)"])]
        for pair, score in transfer.items()
    ]
    guided_rows = [
        [name, how, f"{r['wrong on present keys']:.3f}", f"{r['ungrounded overall']:.3f}"]
        for name, result in guided.items()
        for how, r in result.items()
    ]
    table = "\n\n".join([
        "## Models (trained on present keys; answers to all seeds' questions, greedy)",
        markdown_table(["model", "dim", "layers x heads", "parameters", "steps", "train s",
                        "final loss", *verdicts[first]], train_rows),
        f"## Detection AUROC (two-fold, mean ± std over {args.seeds} seeds of "
        f"{args.examples} questions, half absent)",
        markdown_table(headers, auroc_rows),
        "## Transfer (span detector fit on one model's answers, tested on the other's)",
        markdown_table(["fit -> test", "AUROC", "in-model two-fold AUROC (test model)"],
                       transfer_rows),
        f"## Guided decoding ({args.guided} questions, half absent; k = {args.candidates} "
        f"candidates of {args.chunk} tokens, T = {args.temperature})",
        markdown_table(["model", "decoding", "wrong on present keys", "ungrounded overall"],
                       guided_rows),
    ])  # fmt: skip
    print(table)
    payload = {
        "machine": machine(),
        "task": task.__dict__,
        "args": vars(args),
        "training": training,
        "verdicts": verdicts,
        "auroc": aurocs,
        "transfer": transfer,
        "guided": guided,
    }
    write_results("testbed", payload, table)


if __name__ == "__main__":
    main()
