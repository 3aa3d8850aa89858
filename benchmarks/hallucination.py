"""Hallucination detectors on two testbeds: where does attention tell a hallucination apart?

Models (attnkit's ``CausalLM``, trained here on one thread, saved and loaded back through Hugging
Face ``from_pretrained``, 2 layers x 4 heads so that per-head features align across models):

- **knowledge conflict** (``attnkit.llm.conflict``), widths ``--dims`` (default 64 and 96): a
  world of ``--keys`` facts is memorised without context, then the model learns to answer from
  a context (``--conflict-share`` of the asked facts counterfactual in training). Test questions:
  the context agrees with memory, contradicts it, or lacks the key (``--shares`` 1:2:1, the
  contradictions twice as many: memory answers are rare). Verdicts:
  grounded, memory (the contextual hallucination), invented, abstained.
- **key-value retrieval** (``attnkit.llm.testbed``, shared prefix 1, trained also on absent keys
  answered '?', as in ``benchmarks/testbed.py``'s abstention model): grounded, wrong (a copy of
  another fact), invented, abstained.

Every detector of ``attnkit.llm.detection`` (token probability, predictive entropy, hidden-state
probe, Lookback Lens span and window 4, LLM-Check attention, ReDeEP and its two parts,
retrieval-head mass) is scored on the greedy answers to ``--seeds`` question sets of
``--examples`` each, per failure type (positives: that failure; negatives: the supported answer
of the same questions), by two-fold cross-validation within each seed; the AUROC is the mean over
seeds, and its 95% interval the 2.5 and 97.5 percentiles of ``--bootstrap`` replicates that
resample each seed's positives and negatives (stratified) and average over seeds. Transfer: fit
on every answer of one model ("any" failure), tested on another's. Guided decoding (conflict
model of the first width): greedy, sampling at T = 1, best-of-k by likelihood and guided by the
best attention detector on memory against context (``guided_generate``, k candidates, the
answer in one chunk), on
``--guided`` fresh questions per seed for ``--guided-seeds`` seeds, the detector fit on sampled
answers to ``--fit`` other questions.

    python benchmarks/hallucination.py [--examples 300] [--seeds 5] [--guided 150]
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

from attnkit.llm.conflict import (
    ConflictTrainConfig,
    label_conflict,
    load_conflict,
    make_conflict_examples,
    make_world,
    save_conflict,
    train_conflict_model,
)
from attnkit.llm.detection import make_detector
from attnkit.llm.guided import guided_generate
from attnkit.llm.readout import read_answers
from attnkit.llm.testbed import (
    TaskConfig,
    TestbedConfig,
    load_testbed,
    make_examples,
    run_examples,
    save_testbed,
    train_model,
)
from attnkit.train import count_parameters
from harness import RESULTS, machine, markdown_table, write_results

DETECTORS = {  # label -> (registered name, parameters)
    "token probability": ("token probability", {}),
    "predictive entropy": ("predictive entropy", {}),
    "hidden-state probe": ("hidden-state probe", {}),
    "lookback lens (span)": ("lookback lens", {}),
    "lookback lens (window 4)": ("lookback lens", {"window": 4}),
    "llm-check attention": ("llm-check attention", {}),
    "redeep (ecs + pks)": ("redeep", {"parts": "both"}),
    "redeep ecs": ("redeep", {"parts": "ecs"}),
    "redeep pks": ("redeep", {"parts": "pks"}),
    "retrieval-head mass": ("retrieval-head mass", {}),
}
BASELINES = ("token probability", "predictive entropy", "hidden-state probe")

# failure type -> (answers it is measured on, positives among them)
CONFLICT_FAILURES = {
    "memory against context": (
        lambda a: a.example.kind == "conflict" and a.verdict in ("grounded", "memory"),
        lambda a: a.verdict == "memory",
    ),
    "invented (present key)": (
        lambda a: a.example.present and a.verdict in ("grounded", "invented"),
        lambda a: a.verdict == "invented",
    ),
    "answered an absent key": (
        lambda a: not a.example.present,
        lambda a: a.verdict != "abstained",
    ),
    "any": (lambda a: True, lambda a: bool(a.hallucinated)),
}
KV_FAILURES = {
    "wrong copy (present key)": (
        lambda a: a.example.present and a.verdict in ("grounded", "wrong"),
        lambda a: a.verdict == "wrong",
    ),
    "invented (absent key)": (
        lambda a: not a.example.present,
        lambda a: a.verdict == "invented",
    ),
    "any": (lambda a: True, lambda a: bool(a.hallucinated)),
}


def pair_auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    greater = (pos[:, None] > neg[None]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None]).mean())


def bootstrap(per_seed: list[tuple[np.ndarray, np.ndarray]], replicates: int, seed: int = 0):
    """Mean-over-seeds AUROC and its 95% interval; per_seed holds (positive, negative) scores."""
    rng = np.random.default_rng(seed)
    points, draws = [], np.zeros(replicates)
    for pos, neg in per_seed:
        wins = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])  # (P, N)
        points.append(float(wins.mean()))
        a = rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), replicates)  # (R, P)
        b = rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), replicates)  # (R, N)
        draws += ((a @ wins) * b).sum(1) / (len(pos) * len(neg))
    draws /= len(per_seed)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"auroc": statistics.fmean(points), "low": float(low), "high": float(high),
            "seeds": len(per_seed)}  # fmt: skip


def split(answers, failures) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per failure type: indices of the answers it is measured on, and their labels."""
    out = {}
    for name, (keep, positive) in failures.items():
        index = np.array([i for i, a in enumerate(answers) if keep(a)], dtype=int)
        labels = np.array([int(positive(answers[i])) for i in index], dtype=int)
        out[name] = (index, labels)
    return out


def out_of_fold(name, params, signals, labels, seed) -> np.ndarray | None:
    """Two-fold out-of-fold scores; None when a fold would lack a class."""
    from sklearn.model_selection import StratifiedKFold

    if min(labels.sum(), len(labels) - labels.sum()) < 4:
        return None
    scores = np.zeros(len(labels))
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    for train, test in folds.split(np.zeros(len(labels)), labels):
        detector = make_detector(name, **params).fit([signals[i] for i in train], labels[train])
        scores[test] = detector.predict([signals[i] for i in test])
    return scores


def detection(runs, failures, replicates):
    """runs: per seed (answers, signals). Returns {failure: {detector: summary}} and counts."""
    table, counts = {}, {}
    splits = [split(answers, failures) for answers, _ in runs]
    for failure in failures:
        counts[failure] = {
            "positives": int(sum(s[failure][1].sum() for s in splits)),
            "negatives": int(sum((1 - s[failure][1]).sum() for s in splits)),
        }
        table[failure] = {}
        for label, (name, params) in DETECTORS.items():
            per_seed = []
            for seed, ((_, signals), parts) in enumerate(zip(runs, splits, strict=True)):
                index, labels = parts[failure]
                chosen = [signals[i] for i in index]
                scores = out_of_fold(name, params, chosen, labels, seed)
                if scores is not None:
                    per_seed.append((scores[labels == 1], scores[labels == 0]))
            table[failure][label] = bootstrap(per_seed, replicates) if per_seed else None
    return table, counts


def transfer(source_runs, target_runs, failures, replicates, skip=()):
    """Detectors fit on every answer of the source ('any'), scored per failure on the target."""
    answers = [a for run, _ in source_runs for a in run]
    signals = [s for _, sig in source_runs for s in sig]
    labels = np.array([a.hallucinated for a in answers])
    out = {}
    if len(set(labels.tolist())) < 2:
        return out
    splits = [split(run, failures) for run, _ in target_runs]
    for label, (name, params) in DETECTORS.items():
        if label in skip:
            continue
        detector = make_detector(name, **params).fit(signals, labels)
        out[label] = {}
        for failure in failures:
            per_seed = []
            for (_, sig), parts in zip(target_runs, splits, strict=True):
                index, y = parts[failure]
                if min(y.sum(), len(y) - y.sum()) < 4:
                    continue
                scores = detector.predict([sig[i] for i in index])
                per_seed.append((scores[y == 1], scores[y == 0]))
            out[label][failure] = bootstrap(per_seed, replicates) if per_seed else None
    return out


def cell(summary) -> str:
    if summary is None:
        return "n/a"
    return f"{summary['auroc']:.3f} [{summary['low']:.3f}, {summary['high']:.3f}]"


def verdict_rates(answers, kinds: dict[str, callable], verdicts) -> dict[str, dict[str, float]]:
    out = {}
    for kind, keep in kinds.items():
        chosen = [a for a in answers if keep(a)]
        share = {v: sum(a.verdict == v for a in chosen) / max(1, len(chosen)) for v in verdicts}
        out[kind] = {"n": len(chosen), **share}
    return out


class LikelihoodRanker:
    """Best-of-k by likelihood: the candidate of highest mean token log-probability."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return features[:, 0]


def guided_section(model, tokenizer, world, detector_label, args) -> dict:
    name, params = DETECTORS[detector_label]
    fit_examples = make_conflict_examples(world, args.fit, seed=2000, shares=tuple(args.shares))
    torch.manual_seed(0)
    fit = run_examples(model, tokenizer, fit_examples, label=label_conflict, do_sample=True,
                       temperature=1.0)  # fmt: skip
    if len({a.hallucinated for a in fit}) < 2:
        return None  # nothing to fit a detector on
    detector = make_detector(name, **params).fit(
        read_answers(model, fit), [a.hallucinated for a in fit]
    )
    likelihood = make_detector("token probability").fit(
        read_answers(model, fit), [a.hallucinated for a in fit]
    )

    def by_detector(trace):
        return detector.featurize(read_answers(model, [trace]))[0]

    def by_likelihood(trace):
        return likelihood.featurize(read_answers(model, [trace]))[0]

    kinds = {"agree": lambda e: e.kind == "agree", "conflict": lambda e: e.kind == "conflict",
             "absent": lambda e: e.kind == "absent"}  # fmt: skip
    per_seed = []
    for seed in range(args.guided_seeds):
        examples = make_conflict_examples(
            world, args.guided, seed=3000 + seed, shares=tuple(args.shares)
        )
        texts = {
            "greedy": [
                a.trace.text for a in run_examples(model, tokenizer, examples, label=label_conflict)
            ]
        }
        torch.manual_seed(seed)
        sampled = run_examples(model, tokenizer, examples, label=label_conflict, do_sample=True,
                               temperature=1.0)  # fmt: skip
        texts["sampling (T = 1)"] = [a.trace.text for a in sampled]
        texts[f"best-of-{args.candidates} by likelihood"] = []
        texts[f"guided: {detector_label}"] = []
        for i, example in enumerate(examples):
            common = dict(num_candidates=args.candidates, chunk_size=8, max_new_tokens=8,
                          temperature=1.0, seed=10_000 * seed + i)  # fmt: skip
            ranked = guided_generate(model, tokenizer, example.prompt, example.context,
                                     likelihood, features=by_likelihood, **common)  # fmt: skip
            guided = guided_generate(model, tokenizer, example.prompt, example.context, detector,
                                     features=by_detector, **common)  # fmt: skip
            texts[f"best-of-{args.candidates} by likelihood"].append(ranked.text)
            texts[f"guided: {detector_label}"].append(guided.text)
        rates = {}
        for how, found in texts.items():
            verdicts = [(e, label_conflict(e, t)) for e, t in zip(examples, found, strict=True)]
            rates[how] = {
                kind: {v: sum(1 for e, w in verdicts if keep(e) and w == v)
                       / max(1, sum(1 for e, _ in verdicts if keep(e)))
                       for v in ("grounded", "memory", "invented", "abstained")}
                for kind, keep in kinds.items()
            }  # fmt: skip
        per_seed.append(rates)
    summary = {
        how: {kind: {v: statistics.fmean(r[how][kind][v] for r in per_seed)
                     for v in per_seed[0][how][kind]} for kind in kinds}
        for how in per_seed[0]
    }  # fmt: skip
    spread = {
        how: {kind: {v: statistics.pstdev(r[how][kind][v] for r in per_seed)
                     for v in per_seed[0][how][kind]} for kind in kinds}
        for how in per_seed[0]
    }  # fmt: skip
    return {"detector": detector_label, "mean": summary, "std": spread,
            "fit verdicts": {v: sum(a.verdict == v for a in fit)
                             for v in ("grounded", "memory", "invented", "abstained")}}  # fmt: skip


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(model, failure) for model, failure in (
        ("conflict d64", "memory against context"), ("conflict d96", "memory against context"),
        ("kv d64", "wrong copy (present key)"), ("conflict d64", "answered an absent key"),
    ) if model in results]  # fmt: skip
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), sharey=True)
    labels = list(DETECTORS)
    for axis, (model, failure) in zip(np.atleast_1d(axes), panels, strict=True):
        rows = [results[model][failure][label] for label in labels]
        mean = [r["auroc"] if r else np.nan for r in rows]
        low = [r["auroc"] - r["low"] if r else 0 for r in rows]
        high = [r["high"] - r["auroc"] if r else 0 for r in rows]
        colors = ["#999999" if label in BASELINES else "#1f77b4" for label in labels]
        axis.barh(range(len(labels)), mean, xerr=[low, high], color=colors)
        axis.axvline(0.5, color="black", linewidth=0.8)
        axis.axvline(0.85, color="red", linewidth=0.8, linestyle="--")
        axis.set_xlim(0.0, 1.0)  # token probability falls far below chance on memory answers
        axis.set_title(f"{model}: {failure}", fontsize=9)
        axis.set_yticks(range(len(labels)), labels, fontsize=8)
        axis.invert_yaxis()
    figure.suptitle("AUROC (mean over seeds, 95% bootstrap interval); grey: baselines")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--keys", type=int, default=48)
    parser.add_argument("--memorise-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--conflict-share", type=float, default=0.4)
    parser.add_argument("--shares", type=float, nargs=3, default=[1, 2, 1])
    parser.add_argument("--kv-steps", type=int, default=700)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--fit", type=int, default=300)
    parser.add_argument("--guided", type=int, default=150)
    parser.add_argument("--guided-seeds", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="the folder an earlier run printed: reuse its models and answers, redo every score",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    begin = time.perf_counter()
    if args.resume is not None:  # the trained models and answers of an earlier run
        state = torch.load(args.resume / "state.pt", weights_only=False)
        models = {name: (load_conflict if name.startswith("conflict") else load_testbed)(path)
                  for name, path in state["dirs"].items()}  # fmt: skip
        for name, per_seed in state["runs"].items():  # every score again, from the answers
            failures = CONFLICT_FAILURES if name.startswith("conflict") else KV_FAILURES
            state["aurocs"][name], state["counts"][name] = detection(
                per_seed, failures, args.bootstrap
            )
        state["resumed"] = True
        report(args, models, state, begin - state["seconds"])
        return
    workdir = Path(tempfile.mkdtemp(prefix="attnkit-hallucination-"))
    print(f"models and answers in {workdir}", flush=True)
    world = make_world(num_keys=args.keys, seed=0)
    models, training, dirs = {}, {}, {}
    for dim in args.dims:
        config = ConflictTrainConfig(
            model=TestbedConfig(dim=dim, hidden_dim=2 * dim, steps=args.steps, lr=3e-3,
                                warmup=50, batch_size=32),
            memorise_steps=args.memorise_steps, conflict_share=args.conflict_share,
            conflict_other=args.conflict_share,
        )  # fmt: skip
        start = time.perf_counter()
        lm, losses = train_conflict_model(world, config, seed=0)
        directory = save_conflict(lm, world, workdir / f"conflict-d{dim}")
        dirs[f"conflict d{dim}"] = directory
        models[f"conflict d{dim}"] = load_conflict(directory)
        training[f"conflict d{dim}"] = {
            "dim": dim, "parameters": count_parameters(lm),
            "steps": f"{args.memorise_steps} + {args.steps}",
            "seconds": time.perf_counter() - start,
            "memorise loss (last 20)": statistics.fmean(losses[args.memorise_steps - 20:
                                                               args.memorise_steps]),
            "final loss (last 50)": statistics.fmean(losses[-50:]),
        }  # fmt: skip
        print(f"trained conflict d{dim}: {training[f'conflict d{dim}']}", flush=True)
    kv_task = TaskConfig(shared_prefix=1, abstain=True)
    kv_config = TestbedConfig(dim=64, hidden_dim=128, steps=args.kv_steps, lr=1e-3,
                              absent_questions=1)  # fmt: skip
    start = time.perf_counter()
    lm, losses = train_model(kv_task, kv_config, seed=0)
    dirs["kv d64"] = save_testbed(lm, kv_task, workdir / "kv-d64")
    models["kv d64"] = load_testbed(dirs["kv d64"])
    training["kv d64"] = {"dim": 64, "parameters": count_parameters(lm),
                          "steps": str(args.kv_steps), "seconds": time.perf_counter() - start,
                          "memorise loss (last 20)": float("nan"),
                          "final loss (last 50)": statistics.fmean(losses[-50:])}  # fmt: skip
    print(f"trained kv d64: {training['kv d64']}", flush=True)

    runs, rates, aurocs, counts = {}, {}, {}, {}
    for name, (model, tokenizer, world_or_task) in models.items():
        conflict = name.startswith("conflict")
        runs[name] = []
        for seed in range(args.seeds):
            if conflict:
                examples = make_conflict_examples(
                    world_or_task, args.examples, seed=1000 + seed, shares=tuple(args.shares)
                )
                answers = run_examples(model, tokenizer, examples, label=label_conflict)
            else:
                examples = make_examples(args.examples, world_or_task, seed=1000 + seed)
                answers = run_examples(model, tokenizer, examples)
            runs[name].append((answers, read_answers(model, answers)))
        every = [a for answers, _ in runs[name] for a in answers]
        if conflict:
            kinds = {kind: (lambda a, k=kind: a.example.kind == k)
                     for kind in ("agree", "conflict", "absent")}  # fmt: skip
            verdicts = ("grounded", "memory", "invented", "abstained")
        else:
            kinds = {"present": lambda a: a.example.present,
                     "absent": lambda a: not a.example.present}  # fmt: skip
            verdicts = ("grounded", "wrong", "invented", "abstained")
        rates[name] = verdict_rates(every, kinds, verdicts)
        failures = CONFLICT_FAILURES if conflict else KV_FAILURES
        aurocs[name], counts[name] = detection(runs[name], failures, args.bootstrap)
        print(f"detection {name}: {time.perf_counter() - begin:.0f} s", flush=True)

    state = {
        "runs": runs,
        "rates": rates,
        "aurocs": aurocs,
        "counts": counts,
        "training": training,
        "dirs": dirs,
        "seconds": time.perf_counter() - begin,
    }
    torch.save(state, workdir / "state.pt")
    report(args, models, state, begin)


def report(args, models, state, begin) -> None:
    """Transfer, guided decoding, tables, plot and results files."""
    runs, rates, aurocs = state["runs"], state["rates"], state["aurocs"]
    counts, training = state["counts"], state["training"]
    transfers = {}
    first = f"conflict d{args.dims[0]}"
    pairs = [(first, "kv d64"), ("kv d64", first)]
    if len(args.dims) > 1:
        second = f"conflict d{args.dims[1]}"
        pairs += [(first, second), (second, first)]
    for source, target in pairs:
        failures = CONFLICT_FAILURES if target.startswith("conflict") else KV_FAILURES
        same_width = training[source]["dim"] == training[target]["dim"]
        skip = () if same_width else ("hidden-state probe",)
        transfers[f"{source} -> {target}"] = transfer(
            runs[source], runs[target], failures, args.bootstrap, skip
        )
    print(f"transfer: {time.perf_counter() - begin:.0f} s", flush=True)

    attention = [label for label in DETECTORS if label not in BASELINES]
    target = "memory against context"  # the contextual hallucination the detectors are for
    best = max(attention, key=lambda label: (aurocs[first][target][label] or {"auroc": 0})["auroc"])
    model, tokenizer, first_world = models[first]
    guided = guided_section(model, tokenizer, first_world, best, args)
    print(f"guided: {time.perf_counter() - begin:.0f} s", flush=True)
    wall = time.perf_counter() - begin

    # ------------------------------------------------------------------------------ report
    sections = [
        "# Hallucination detectors on two testbeds",
        "## Models (2 layers x 4 heads; conflict: memorise, then read; kv: abstention model)",
        markdown_table(["model", "dim", "parameters", "steps", "train s",
                        "memorise loss", "final loss"],
                       [[n, t["dim"], t["parameters"], t["steps"], f"{t['seconds']:.0f}",
                         f"{t['memorise loss (last 20)']:.4f}", f"{t['final loss (last 50)']:.3f}"]
                        for n, t in training.items()]),
        f"## Failure rates (greedy answers, {args.seeds} seeds x {args.examples} questions)",
    ]  # fmt: skip
    for name, by_kind in rates.items():
        verdicts = [v for v in next(iter(by_kind.values())) if v != "n"]
        sections.append(markdown_table(
            [f"{name}: context", "n", *verdicts],
            [[kind, r["n"], *(f"{r[v]:.3f}" for v in verdicts)] for kind, r in by_kind.items()],
        ))  # fmt: skip
    sections.append(
        f"## Detection AUROC (two-fold within each seed; mean over {args.seeds} seeds "
        f"[95% bootstrap interval, {args.bootstrap} replicates]); n = positives / negatives "
        "over all seeds"
    )
    for name, table in aurocs.items():
        failures = list(table)
        header = [f"{name}: detector",
                  *(f"{f} ({counts[name][f]['positives']}/{counts[name][f]['negatives']})"
                    for f in failures)]  # fmt: skip
        sections.append(markdown_table(
            header, [[label, *(cell(table[f][label]) for f in failures)] for label in DETECTORS]
        ))  # fmt: skip
    sections.append("## Transfer (fit on every answer of one model, 'any' label; tested per "
                    "failure type on the other's answers)")  # fmt: skip
    for pair, table in transfers.items():
        if not table:
            continue
        failures = list(next(iter(table.values())))
        sections.append(markdown_table(
            [pair, *failures], [[label, *(cell(table[label][f]) for f in failures)]
                                for label in table]))  # fmt: skip
    if guided is not None:
        sections.append(
            f"## Decoding ({first}; {args.guided_seeds} seeds x {args.guided} fresh questions, "
            f"agree:conflict:absent {args.shares}; k = {args.candidates}; the guiding detector, "
            "the best attention detector on memory against context, fit ('any' label) on sampled "
            "answers to "
            f"{args.fit} other questions: "
            f"{guided['fit verdicts']}); mean share of each verdict"
        )
        rows = []
        for how, by_kind in guided["mean"].items():
            for kind, shares in by_kind.items():
                rows.append([how, kind, *(f"{shares[v]:.3f} ± {guided['std'][how][kind][v]:.3f}"
                                          for v in shares)])  # fmt: skip
        sections.append(markdown_table(["decoding", "context", "grounded", "memory", "invented",
                                        "abstained"], rows))  # fmt: skip
    resumed = (
        f" (models and answers from a first run, {state['seconds']:.0f} s of it; every score, "
        "the transfer and the decoding recomputed from them with --resume)"
        if state.get("resumed")
        else ""
    )
    sections.append(
        f"Wall time: {wall:.0f} s on {torch.get_num_threads()} thread(s){resumed}; the machine's "
        "2 cores were shared with other jobs."
    )
    table = "\n\n".join(sections)
    print(table)
    plot(aurocs, RESULTS / "hallucination.png")
    payload = {"machine": machine(),
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "wall seconds": wall,
               "training": training, "rates": rates, "counts": counts, "auroc": aurocs,
               "transfer": transfers, "guided": guided,
               "world": {"keys": args.keys, "seed": 0}}  # fmt: skip
    write_results("hallucination", payload, table)


if __name__ == "__main__":
    main()
