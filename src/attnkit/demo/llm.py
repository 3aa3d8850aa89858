"""Demo steps on the retrieval testbed: LLM attention signals, the hallucination detector, the
evaluation suite, and an SQLite monitor with its drift report.

- ``llm``: a small :class:`~attnkit.models.lm.CausalLM` is trained to answer key-value questions
  about its context (:mod:`attnkit.llm.testbed`), saved and loaded back as a Hugging Face Llama;
  its greedy answers to fresh questions, half about absent keys, are traced by
  :func:`attnkit.llm.generate` and labelled (grounded, wrong, invented). The Lookback Lens detector
  is cross-validated against its mean-lookback-ratio baseline, the model's own token probability
  and the detector attnkit recommends for contextual hallucination
  (:data:`attnkit.llm.detection.RECOMMENDED`, measured on the knowledge-conflict testbed); the
  default evaluation suite runs with that detector, its measured AUROC in the report.
- ``monitor``: a week of simulated traffic (mostly present keys) and a last day with mostly absent
  keys are logged through :class:`attnkit.monitor.Monitor` to ``monitor/monitor.db``, rebuilt on
  every run; the drift report compares the last day with the week before.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnkit.demo.hf import quiet_transformers
from attnkit.demo.result import StepContext, StepResult, Table
from attnkit.htmlkit import format_significant

__all__ = ["Testbed", "llm_step", "monitor_step"]

MODEL_TAG = "testbed-d64"


@dataclass
class Testbed:
    """What the ``monitor`` step reuses of the ``llm`` step."""

    model: Any  # LlamaForCausalLM
    tokenizer: Any
    task: Any  # attnkit.llm.testbed.TaskConfig
    detector: Any | None  # a fitted LookbackLens, or None when the answers had one label only


def _fold_auroc(scores: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """AUROC of fixed scores on the test halves of the same two folds the detectors use."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed).split(
        scores[:, None], labels
    )
    return float(np.mean([roc_auc_score(labels[test], scores[test]) for _, test in folds]))


def _count_steps(tick):
    """Call ``tick`` after every training forward pass of a CausalLM (the testbed's trainer has
    no callback); returns the hook's handle."""
    import torch

    from attnkit.models.lm import CausalLM

    def hook(module, _inputs, _output):
        if isinstance(module, CausalLM) and module.training:
            tick()

    return torch.nn.modules.module.register_module_forward_hook(hook)


def llm_step(context: StepContext) -> StepResult:
    """Train the testbed model, trace its answers, cross-validate the Lookback Lens, run the
    evaluation suite."""
    from attnkit.llm.detection import RECOMMENDED, cross_validated_auroc, recommended_detector
    from attnkit.llm.lookback_lens import LookbackLens
    from attnkit.llm.readout import read_answers
    from attnkit.llm.suite import Example, default_suite
    from attnkit.llm.testbed import (
        TaskConfig,
        TestbedConfig,
        detector_inputs,
        load_testbed,
        make_examples,
        run_examples,
        save_testbed,
        train_model,
    )
    from attnkit.train import count_parameters

    sizes, name, seed = context.sizes, "llm", context.seed
    folder = context.folder(name)
    total = sizes.testbed_steps + 2
    done = [0]

    def tick() -> None:
        done[0] = min(done[0] + 1, total)
        context.progress(done[0], total)

    task = TaskConfig()
    config = TestbedConfig(steps=sizes.testbed_steps, batch_size=64, lr=2e-3, warmup=50)
    context.progress(0, total)
    handle = _count_steps(tick)
    try:
        started = time.perf_counter()
        lm, losses = train_model(task, config, seed=seed)
        train_seconds = time.perf_counter() - started
    finally:
        handle.remove()
    with quiet_transformers():
        model, tokenizer, task = load_testbed(save_testbed(lm, task, folder / "model"))
        # stop at ';' and pad with <pad> for any loader too, so that attnkit eval on this
        # directory generates what the demo did
        model.generation_config.save_pretrained(folder / "model")
    examples = make_examples(sizes.testbed_questions, task, seed=1000 + seed)
    labelled = run_examples(model, tokenizer, examples)
    context.progress(total - 1, total)
    verdicts = Counter(item.verdict for item in labelled)
    features, labels, _ = detector_inputs(labelled)
    log_probs = np.array([item.log_prob for item in labelled])
    both = len(set(labels.tolist())) == 2 and min(Counter(labels.tolist()).values()) >= 2
    aurocs: dict[str, float] = {}
    detector = recommended = None
    files = []
    if both:
        aurocs = {
            "Lookback Lens (lookback ratio of every head)": LookbackLens().cross_validated_auroc(
                features, labels, seed=seed
            ),
            "mean lookback ratio over all heads (baseline)": LookbackLens(
                mean_baseline=True
            ).cross_validated_auroc(features, labels, seed=seed),
            "token probability (no attention, no fitting)": _fold_auroc(-log_probs, labels, seed),
        }
        detector = LookbackLens().fit(features, labels)
        detector.save(folder / "detector.json")
        files.append(f"{name}/detector.json")
        # the detector attnkit recommends for contextual hallucination, by name, with the AUROC
        # measured for it on the knowledge-conflict testbed (shown in the eval report)
        signals = read_answers(model, labelled)
        label = RECOMMENDED["label"]
        aurocs[f"{label} (recommended for answers from memory)"] = cross_validated_auroc(
            RECOMMENDED["name"], signals, labels, seed=seed, **RECOMMENDED["params"]
        )
        recommended = recommended_detector().fit(signals, labels)
        recommended.save(folder / "recommended.json")
        files.append(f"{name}/recommended.json")
    loss = float(np.mean(losses[-20:]))
    n = len(labelled)
    notes = [
        f"A {count_parameters(lm):,}-parameter CausalLM (2 layers x 4 heads) "
        f"trained {sizes.testbed_steps} steps of 64 (final loss {loss:.3f}) to "
        "copy a key's value from its context; saved and reloaded as a Hugging Face Llama.",
        f"Of {n} greedy answers ({verdicts['invented']} about absent keys): "
        f"{verdicts['grounded']} grounded, {verdicts['wrong']} wrong, {verdicts['invented']} "
        "invented (it never learned to abstain).",
    ]
    if aurocs:
        best = max(aurocs, key=aurocs.get)
        lens = aurocs["Lookback Lens (lookback ratio of every head)"]
        notes.append(
            f"Hallucination detection, two-fold AUROC: Lookback Lens {lens:.2f}; best is {best} "
            f"({aurocs[best]:.2f})."
            + (
                " On this testbed the model's own token probability is the better detector, as in "
                "benchmarks/results/hallucination.md (wrong copies of another fact: 0.846 against "
                "0.76 at best for attention)."
                if best.startswith("token probability")
                else ""
            )
        )
        notes.append(
            "Where the model answers from what it memorised against its context (the "
            "knowledge-conflict testbed, benchmarks/results/hallucination.md), attention tells: "
            f"{RECOMMENDED['label']} {RECOMMENDED['auroc']:.2f} [{RECOMMENDED['low']:.2f}, "
            f"{RECOMMENDED['high']:.2f}] against token probability "
            f"{RECOMMENDED['token probability']:.2f} (such answers are confident); the evaluation "
            f"suite below runs that detector ({RECOMMENDED['label']}), fit on these answers."
        )
    else:
        notes.append(
            "Every answer has the same label, so there is nothing for a detector to separate; "
            "the detector and its AUROC are left out (train longer)."
        )
    _signals_figure(labelled, folder / "signals.png")
    files.append(f"{name}/signals.png")

    # the default evaluation suite over a few fresh questions, with the fitted detector
    questions = make_examples(max(4, sizes.testbed_questions // 16), task, seed=5000 + seed)
    suite_examples = [
        Example(f"q{i:03d}", q.prompt, q.context, q.value) for i, q in enumerate(questions)
    ]
    with (folder / "prompts.jsonl").open("w", encoding="utf-8") as handle_out:
        import json

        for example in suite_examples:
            row = {"id": example.id, "prompt": example.prompt, "context": example.context}
            if example.expected is not None:
                row["expected"] = example.expected
            handle_out.write(json.dumps(row) + "\n")
    # as attnkit eval runs it with --detector recommended.json: the same result from the CLI
    suite = default_suite(recommended if recommended is not None else detector)
    result = suite.run(suite_examples, model, tokenizer, max_new_tokens=32)
    result.to_json(folder / "eval.json")
    result.to_html(folder / "eval.html")
    context.progress(total, total)
    files += [f"{name}/eval.html", f"{name}/eval.json", f"{name}/prompts.jsonl", f"{name}/model"]
    notes.append(
        f"Evaluation suite over {len(suite_examples)} questions: {result.status.value}; "
        + "; ".join(f"{c.name} {c.status.value}" for c in result.checks)
        + ". Answers to absent keys have no expected answer, so only the signals and the "
        "detector can flag them."
    )
    rows = tuple((method, f"{value:.3f}") for method, value in aurocs.items())
    figures = {f"{k} answers": float(verdicts[k]) for k in ("grounded", "wrong", "invented")}
    if aurocs:
        figures["lookback lens auroc"] = aurocs["Lookback Lens (lookback ratio of every head)"]
        figures["token probability auroc"] = aurocs["token probability (no attention, no fitting)"]
    payload = {
        "train_seconds": train_seconds,
        "train_steps": sizes.testbed_steps,
        "final_loss": loss,
        "verdicts": dict(verdicts),
        "auroc": aurocs,
        "suite_status": result.status.value,
    }
    files.insert(0, context.write_json(name, "results.json", payload))
    return StepResult(
        name=name,
        title="LLM: attention signals and the hallucination detector on the retrieval testbed",
        headline=f"{verdicts['grounded']} grounded, {verdicts['wrong']} wrong, "
        f"{verdicts['invented']} invented answers"
        + (
            f"; AUROC: Lookback Lens {aurocs['Lookback Lens (lookback ratio of every head)']:.2f}, "
            f"token probability {aurocs['token probability (no attention, no fitting)']:.2f}"
            if aurocs
            else "; one label only, no detector"
        ),
        figures=figures,
        notes=tuple(notes),
        table=Table(("detector (1 = answer not grounded in the context)", "AUROC"), rows)
        if rows
        else None,
        files=tuple(files),
        data=Testbed(model, tokenizer, task, detector),
    )


def _signals_figure(labelled, path) -> None:
    """Histograms of the answer's mean lookback ratio and token log-probability, by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratio = np.array([float(item.trace.lookback_ratio.float().mean()) for item in labelled])
    log_prob = np.array([item.log_prob for item in labelled])
    grounded = np.array([item.hallucinated == 0 for item in labelled])
    figure, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    for axis, values, label in (
        (axes[0], ratio, "mean lookback ratio of the answer"),
        (axes[1], log_prob, "mean token log-probability"),
    ):
        bins = np.histogram_bin_edges(values, bins=20)
        axis.hist(values[grounded], bins=bins, alpha=0.6, label="grounded", color="#1a7f37")
        axis.hist(values[~grounded], bins=bins, alpha=0.6, label="not grounded", color="#b42318")
        axis.set_xlabel(label, fontsize=8)
        axis.legend(fontsize=7)
    figure.suptitle("testbed answers: attention signal vs the model's own confidence", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def monitor_step(context: StepContext) -> StepResult:
    """Log a simulated week and day of testbed traffic to SQLite; the drift report of the day."""
    from attnkit.llm.testbed import make_examples, run_examples
    from attnkit.monitor.client import Monitor, summarize
    from attnkit.monitor.drift import drift_report
    from attnkit.monitor.report import render_drift_report
    from attnkit.monitor.store import Store

    name, sizes, seed = "monitor", context.sizes, context.seed
    previous = context.results.get("llm")
    if previous is None or not isinstance(previous.data, Testbed):
        return StepResult(
            name, "Monitoring", notes=("Needs the llm step, which did not run.",), status="skipped"
        )
    testbed: Testbed = previous.data
    folder = context.folder(name)
    path = folder / "monitor.db"
    for suffix in ("", "-wal", "-shm", "-journal"):  # rebuilt, never appended to
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    # the last day's prompts carry more facts per context and ask more often about absent keys
    task = testbed.task
    few = dataclasses.replace(task, max_facts=max(task.min_facts, task.max_facts - 1))
    many = dataclasses.replace(task, min_facts=min(task.min_facts + 1, task.max_facts))
    windows = {
        "reference": make_examples(
            sizes.monitor_reference, few, seed=2000 + seed, absent_share=0.1
        ),
        "current": make_examples(sizes.monitor_current, many, seed=3000 + seed, absent_share=0.6),
    }
    total = sum(map(len, windows.values())) + 1
    context.progress(0, total)
    store = Store(f"sqlite:///{path}")
    try:
        store.upgrade()
        now = time.time()
        done = 0
        with Monitor(store, batch_size=500, flush_interval=60.0) as monitor:
            for window, examples in windows.items():
                labelled = run_examples(testbed.model, testbed.tokenizer, examples)
                for i, item in enumerate(labelled):
                    share = i / max(1, len(labelled))
                    days = 1.5 + 6.0 * share if window == "reference" else 0.05 + 0.9 * share
                    record = summarize(
                        item.trace,
                        tags={
                            "model": MODEL_TAG,
                            "version": "1",
                            "window": window,
                            "verdict": item.verdict,
                        },
                        request_id=f"demo-{window}-{i:05d}",
                        detector=testbed.detector,
                        tokenizer=testbed.tokenizer,
                        per_token=True,
                        at=now - 86400.0 * days,
                    )
                    monitor.log_record(record)
                done += len(labelled)
                context.progress(done, total)
        count = store.count()
        reference, current = store.windows(current_days=1.0, reference_days=7.0, end=now + 60)
    finally:
        store.close()
    usable = [k for k in reference if len(reference[k]) > 1 and len(current[k]) > 1]
    reference = {k: reference[k] for k in usable}
    current = {k: current[k] for k in usable}
    report = drift_report(reference, current)
    (folder / "drift.html").write_text(
        render_drift_report(
            report,
            reference,
            current,
            title="attnkit demo: drift of the last day",
            tags={"model": MODEL_TAG},
        ),
        encoding="utf-8",
    )
    context.progress(total, total)
    drifted = [signal for signal, result in report.results.items() if result.drifted]
    rows = tuple(
        (
            signal,
            result.method,
            format_significant(result.statistic),
            "drift" if result.drifted else "no drift",
        )
        for signal, result in report.results.items()
    )
    notes = [
        f"{count} generations logged to monitor/monitor.db (SQLite) through "
        f"attnkit.monitor.Monitor: a reference week of contexts with {few.min_facts}-"
        f"{few.max_facts} facts and 10% questions about absent keys, then a last day with "
        f"{many.min_facts}-{many.max_facts} facts and 60% absent keys.",
        "Drifted signals in the last day: " + (", ".join(drifted) if drifted else "none") + ".",
        *(
            [
                "The lookback ratio did not drift although far more answers are invented: on "
                "this model it does not tell invented answers from grounded ones (see the llm "
                "step's AUROC); longer contexts move the other signals."
            ]
            if "lookback_ratio" not in drifted and drifted
            else []
        ),
        "Browse them: attnkit demo --serve, or attnkit serve --db sqlite:///<out>/monitor/monitor.db.",
    ]
    return StepResult(
        name=name,
        title="Monitoring: generations logged to SQLite, drift of the last day",
        headline=f"{count} records; drifted in the last day: "
        + (", ".join(drifted) if drifted else "none"),
        figures={"records": float(count), "drifted signals": float(len(drifted))},
        notes=tuple(notes),
        table=Table(("signal", "test", "statistic", "verdict"), rows),
        files=(f"{name}/drift.html", f"{name}/monitor.db"),
    )
