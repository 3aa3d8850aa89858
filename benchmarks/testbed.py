"""Lookback Lens on an honest testbed: key–value retrieval answered by small CausalLMs.

The task (``attnkit.llm.testbed``) has a shared prefix (``--shared-prefix``, default 1): every
value of a context starts with the same character, so copying a value past it must tell the
facts apart, and the models sometimes copy another fact's tail instead: a contextual
hallucination, the answer being in the context. Two models of the same shape (2 layers x 4
heads, so their lookback-ratio features align) but different width (``--dims``, default 64 and
96, at peak learning rates ``--lrs`` 1e-3 and 2e-3) are trained by attnkit for ``--steps`` 700
on present-key questions, saved and loaded back through Hugging Face ``from_pretrained``; a third
(``--abstain-dim``, default 64, at ``--abstain-lr`` 1e-3; 0 leaves it out) is also trained on
absent keys (one question per training context, beside 2 to 4 present-key ones) answered ``?``.
This budget stops the models part way through learning the task, on purpose: trained longer or
faster (d64: 1000 steps at 1e-3, or 700 at 2e-3) they answer 98-99.7% of present keys right
greedily, and d96 at 1e-3 is still on the loss plateau after 1000 steps (96% wrong).
Answers are labelled ``grounded`` / ``wrong`` (present key) / ``invented`` / ``abstained``
(absent key); 1 = wrong or invented. Reported, as mean ± std over seeds (each seed a new
question set):

- detection AUROC (two-fold, each seed a new split) on greedy answers to ``--examples``
  questions, half about absent keys, of the two present-key models: Lookback Lens on span
  features (the whole answer) and on sliding windows of 8 and 4 tokens (a window carries its
  answer's label; an answer's windows stay in one fold), the mean-LR-over-all-heads baseline, and
  the model's own token probability (mean log-probability of the answer tokens, lower = more
  suspect; no fitting);
- transfer: a span detector fit on one model's answers and tested on the other's;
- guided decoding (Lookback Lens §4), every model: a window detector (window = chunk) is fit on
  answers sampled at temperature ``T`` to ``--fit`` questions (present keys; for the abstention
  model half absent), disjoint from the ``--guided-seeds`` evaluation sets of ``--guided``
  fresh questions (likewise). On those: greedy decoding, plain sampling at ``T``, and two guided
  decoders with ``k`` candidate chunks of ``n`` tokens sampled at ``T``, the same candidates for
  both (same seed): the one the Lookback Lens rates most grounded kept, or the one of highest
  mean token log-probability (best-of-k by likelihood, the baseline a detector has to beat). The
  share of wrong answers on present keys (and of those, answers ``?``), and of invented and
  abstaining answers on absent keys; the present-key models have no ``?`` token, so every answer
  to an absent key is invented by construction (not run). Also the AUROC of both scores on the
  evaluation sets' sampled answers (the Lookback Lens on each answer's first window: what it
  sees of a candidate's first chunk).

    python benchmarks/testbed.py [--examples 300] [--seeds 5] [--steps 700] [--guided 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.llm.guided import guided_generate
from attnkit.llm.lookback_lens import LookbackLens
from attnkit.llm.testbed import (
    ABSTAIN,
    TaskConfig,
    TestbedConfig,
    answer_log_prob,
    detector_inputs,
    label_answer,
    load_testbed,
    make_examples,
    run_examples,
    save_testbed,
    train_model,
)
from attnkit.train import count_parameters
from harness import machine, markdown_table, write_results

DECODERS = ("greedy", "sampling", "guided: lookback lens", "guided: token probability")


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


class TokenProbability:
    """Scores a candidate ``1 - exp(mean log-probability)``: best-of-k by likelihood."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return 1.0 - np.exp(features[:, 0])


def rates(examples, texts: list[str]) -> dict[str, float]:
    """Shares of wrong and of ``?`` answers on present keys, of invented and abstaining answers
    on absent keys (NaN where there are no such keys)."""
    present, absent = [], []
    for example, text in zip(examples, texts, strict=True):
        found = present if example.present else absent
        found.append((label_answer(example, text), text.split(";", 1)[0]))

    def share(found: list[tuple[str, str]], keep) -> float:
        return sum(map(keep, found)) / len(found) if found else float("nan")

    return {
        "wrong on present keys": share(present, lambda a: a[0] == "wrong"),
        "of which '?'": share(present, lambda a: a[1] == ABSTAIN),
        "invented on absent keys": share(absent, lambda a: a[0] == "invented"),
        "abstained on absent keys": share(absent, lambda a: a[0] == "abstained"),
    }


def guided_section(model, tokenizer, task: TaskConfig, absent_share: float, args) -> dict:
    """Greedy, sampled and guided answers on fresh question sets; detectors fit beforehand."""
    from sklearn.metrics import roc_auc_score

    fit_examples = make_examples(args.fit, task, seed=2000, absent_share=absent_share)
    torch.manual_seed(0)
    fit = run_examples(model, tokenizer, fit_examples, do_sample=True, temperature=args.temperature)
    x, y, _ = detector_inputs(fit, window=args.chunk)
    lens = LookbackLens().fit(x, y)
    probability = TokenProbability()

    def log_prob(trace) -> np.ndarray:
        return np.array([answer_log_prob(model, trace)])

    per_seed, aurocs = [], []
    for seed in range(args.guided_seeds):
        examples = make_examples(args.guided, task, seed=3000 + seed, absent_share=absent_share)
        greedy = run_examples(model, tokenizer, examples)
        texts = {"greedy": [item.trace.text for item in greedy]}
        torch.manual_seed(seed)
        sampled = run_examples(
            model, tokenizer, examples, do_sample=True, temperature=args.temperature
        )
        texts["sampling"] = [item.trace.text for item in sampled]
        texts["guided: lookback lens"], texts["guided: token probability"] = [], []
        for i, example in enumerate(examples):
            common = dict(num_candidates=args.candidates, chunk_size=args.chunk,
                          max_new_tokens=12, temperature=args.temperature,
                          seed=10_000 * seed + i)  # fmt: skip
            by_lens = guided_generate(
                model, tokenizer, example.prompt, example.context, lens, **common
            )
            by_probability = guided_generate(
                model, tokenizer, example.prompt, example.context, probability,
                features=log_prob, **common,
            )  # fmt: skip
            texts["guided: lookback lens"].append(by_lens.text)
            texts["guided: token probability"].append(by_probability.text)
        per_seed.append({name: rates(examples, found) for name, found in texts.items()})
        windows, _, groups = detector_inputs(sampled, window=args.chunk)
        first_windows = windows[np.unique(groups, return_index=True)[1]]  # the first chunk's
        labels = np.array([item.hallucinated for item in sampled])
        aurocs.append({
            f"lookback lens (first window of {args.chunk})": roc_auc_score(
                labels, lens.predict_proba(first_windows)
            ),
            "token probability": roc_auc_score(
                labels, -np.array([item.log_prob for item in sampled])
            ),
            "not grounded share": float(labels.mean()),
        })  # fmt: skip
    summary = {
        name: {
            rate: mean_std([r[name][rate] for r in per_seed])
            for rate in per_seed[0][name]
            if not np.isnan(per_seed[0][name][rate])
        }
        for name in DECODERS
    }
    detected = {key: mean_std([a[key] for a in aurocs]) for key in aurocs[0]}
    return {"rates": summary, "sampled-answer auroc": detected, "fit": fit_summary(fit)}


def fit_summary(fit) -> dict[str, int]:
    return {verdict: sum(item.verdict == verdict for item in fit)
            for verdict in ("grounded", "wrong", "invented", "abstained")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs=2, default=[64, 96])
    parser.add_argument("--lrs", type=float, nargs=2, default=[1e-3, 2e-3])
    parser.add_argument("--abstain-dim", type=int, default=64)
    parser.add_argument("--abstain-lr", type=float, default=1e-3)
    parser.add_argument("--shared-prefix", type=int, default=1)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--fit", type=int, default=400)
    parser.add_argument("--guided", type=int, default=200)
    parser.add_argument("--guided-seeds", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    begin = time.perf_counter()
    task = TaskConfig(shared_prefix=args.shared_prefix)
    abstain_task = dataclasses.replace(task, abstain=True)

    plan = {f"d{dim}": (task, TestbedConfig(dim=dim, hidden_dim=2 * dim, steps=args.steps, lr=lr))
            for dim, lr in zip(args.dims, args.lrs, strict=True)}  # fmt: skip
    if args.abstain_dim:
        plan[f"d{args.abstain_dim} abstain"] = (abstain_task, TestbedConfig(
            dim=args.abstain_dim, hidden_dim=2 * args.abstain_dim, steps=args.steps,
            lr=args.abstain_lr, absent_questions=1,
        ))  # fmt: skip
    models, training = {}, {}
    workdir = Path(tempfile.mkdtemp(prefix="attnkit-testbed-"))
    for name, (model_task, config) in plan.items():
        start = time.perf_counter()
        lm, losses = train_model(model_task, config, seed=0)
        seconds = time.perf_counter() - start
        directory = save_testbed(lm, model_task, workdir / name.replace(" ", "-"))
        models[name] = load_testbed(directory)[:2]
        params = count_parameters(lm)
        training[name] = {"dim": config.dim, "layers": config.num_layers,
                          "heads": config.num_heads, "parameters": params,
                          "steps": config.steps, "lr": config.lr,
                          "absent questions": config.absent_questions,
                          "seconds": seconds, "loss first 50": statistics.fmean(losses[:50]),
                          "loss last 50": statistics.fmean(losses[-50:])}  # fmt: skip
        print(f"trained {name}: {seconds:.0f} s, loss {training[name]['loss last 50']:.3f}")

    first, second = (f"d{dim}" for dim in args.dims)
    labelled = {name: {} for name in (first, second)}
    verdicts = {}
    for name in labelled:
        model, tokenizer = models[name]
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
    for name in labelled:
        per_seed = [detection(labelled[name][seed], seed) for seed in range(args.seeds)]
        aurocs[name] = {key: mean_std([r[key] for r in per_seed]) for key in per_seed[0]}

    transfer = {}
    for source, target in ((first, second), (second, first)):
        scores = []
        for seed in range(args.seeds):
            x, y, _ = detector_inputs(labelled[source][seed])
            tx, ty, _ = detector_inputs(labelled[target][seed])
            scores.append(LookbackLens().fit(x, y).auroc(tx, ty))
        transfer[f"{source} -> {target}"] = mean_std(scores)
    print(f"detection and transfer done: {time.perf_counter() - begin:.0f} s")

    guided = {}
    for name, (model, tokenizer) in models.items():
        start = time.perf_counter()
        model_task = plan[name][0]
        guided[name] = guided_section(model, tokenizer, model_task, 0.5 * model_task.abstain, args)
        print(f"guided decoding {name}: {time.perf_counter() - start:.0f} s")
    wall = time.perf_counter() - begin

    detectors = list(aurocs[first])
    headers = ["detector", *(f"AUROC {name}" for name in labelled)]
    auroc_rows = [[d, *(cell(aurocs[name][d]) for name in labelled)] for d in detectors]
    train_rows = [[name, t["dim"], f"{t['layers']} x {t['heads']}", t["parameters"], t["steps"],
                   t["lr"], t["absent questions"], f"{t['seconds']:.0f}",
                   f"{t['loss last 50']:.3f}"]
                  for name, t in training.items()]  # fmt: skip
    verdict_rows = [[name, *found.values()] for name, found in verdicts.items()]
    transfer_rows = [
        [pair, cell(score), cell(aurocs[pair.split(" -> ")[1]]["lookback lens (span)"])]
        for pair, score in transfer.items()
    ]
    rate_names = ("wrong on present keys", "of which '?'", "invented on absent keys",
                  "abstained on absent keys")  # fmt: skip
    guided_rows = [
        [name, how, *(cell(r[rate]) if rate in r else "1 (by construction)" if
                      rate.startswith("invented") else "—" for rate in rate_names)]
        for name, result in guided.items()
        for how, r in result["rates"].items()
    ]  # fmt: skip
    sampled_keys = list(next(iter(guided.values()))["sampled-answer auroc"])
    sampled_rows = [[name, *(cell(result["sampled-answer auroc"][k]) for k in sampled_keys),
                     " / ".join(str(n) for n in result["fit"].values())]
                    for name, result in guided.items()]  # fmt: skip
    table = "\n\n".join([
        f"## Models (task: shared prefix {args.shared_prefix}; 'abstain' also trained on absent "
        "keys answered '?', one per training context)",
        markdown_table(["model", "dim", "layers x heads", "parameters", "steps", "peak lr",
                        "absent questions per context", "train s", "final loss"], train_rows),
        f"## Greedy answers to the detection questions ({args.seeds} seeds x {args.examples}, "
        "half absent)",
        markdown_table(["model", *verdicts[first]], verdict_rows),
        f"## Detection AUROC (two-fold, mean ± std over {args.seeds} seeds of "
        f"{args.examples} questions, half absent; greedy answers)",
        markdown_table(headers, auroc_rows),
        "## Transfer (span detector fit on one model's answers, tested on the other's)",
        markdown_table(["fit -> test", "AUROC", "in-model two-fold AUROC (test model)"],
                       transfer_rows),
        f"## Guided decoding (mean ± std over {args.guided_seeds} seeds of {args.guided} fresh "
        "questions: present keys only, for the abstention model half absent; "
        f"k = {args.candidates} candidates of {args.chunk} tokens, T = {args.temperature})",
        markdown_table(["model", "decoding", *rate_names], guided_rows),
        f"## The guided decoders' scores on the evaluation sets' sampled answers (AUROC over "
        f"answers; the Lookback Lens fit on {args.fit} other questions' sampled answers)",
        markdown_table(["model", *sampled_keys,
                        "fit answers grounded / wrong / invented / abstained"], sampled_rows),
        f"Wall time: {wall:.0f} s on {torch.get_num_threads()} thread(s).",
    ])  # fmt: skip
    print(table)
    payload = {
        "machine": machine(),
        "task": dataclasses.asdict(task),
        "args": vars(args),
        "wall seconds": wall,
        "training": training,
        "verdicts": verdicts,
        "auroc": aurocs,
        "transfer": transfer,
        "guided": guided,
    }
    write_results("testbed", payload, table)


if __name__ == "__main__":
    main()
