"""Jain & Wallace (2019)'s rank-agreement protocol on a trained attnkit text classifier, with
ERASER scores and verdicts: the table ``attnkit faithfulness RUN --data FILE`` writes.

**Protocol** (Jain & Wallace 2019, "Attention is not Explanation", §4.1), on each test example,
for the class the model predicts (``ŷ``):

- *attention*: the pooling weights ``α_t`` of the model's own forward (``"attention pooling"``);
- *gradient*: gradient × input of the predicted class's logit, ``Σ_e x_te ∂z_ŷ/∂x_te`` over the
  token embeddings ``x_t`` (the gradient with respect to the one-hot input, read at the word's
  row), **with the attention weights detached** so that the gradient shows how the prediction
  moves with the inputs at fixed attention, as Jain & Wallace do (``"gradient x input"``; the
  pooling's weights: a transformer encoder's self-attention keeps its gradient);
- *leave-one-out*: ``p_ŷ(x) − p_ŷ(x without t)``, the token deleted from the sequence
  (recurrent encoders) or masked from attention (transformer); over magnitudes, for two classes,
  this is Jain & Wallace's total variation distance between the two output distributions;
- *tokens*: every word of the text, no padding; the vocabulary's ``<unk>`` included.

Kendall's τ-b (``scipy.stats.kendalltau``) per example between two methods' scores, over
magnitudes ``|score|`` (the paper's convention) and signed; the table gives mean ± sd over
examples (Jain & Wallace's Table 2 format) and a bootstrap interval of the mean. ERASER
comprehensiveness, sufficiency and AOPC per method (DeYoung et al. 2020), and verdicts against
leave-one-out (:func:`attnkit.interpret.judge`) in both conventions, with ``n`` and intervals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from attnkit.htmlkit import format_interval, format_number, format_percent
from attnkit.interpret.attribution import Classifier, gradient_x_input, is_signed, leave_one_out
from attnkit.interpret.faithfulness import (
    BINS,
    CONVENTIONS,
    eraser,
    percentile_bootstrap,
    rank_agreement,
)
from attnkit.interpret.verdicts import LEVEL, RESAMPLES, MethodVerdict, judge

__all__ = [
    "PROTOCOL",
    "FaithfulnessTable",
    "MethodEraser",
    "PairAgreement",
    "jain_wallace",
    "pair_agreements",
    "replicate",
]

PROTOCOL = {
    "attention": "the pooling weights of the model's own forward",
    "gradient": "gradient x input of the predicted class's logit w.r.t. the token embeddings, "
    "attention weights detached (Jain & Wallace 2019, section 4.1)",
    "leave-one-out": "p(predicted | text) - p(predicted | text without the token); the token "
    "deleted (recurrent encoders) or masked (transformer); |.| = total variation for 2 classes",
    "target": "the predicted class",
    "tokens": "every word of the text (no padding), <unk> included",
    "tau": "Kendall's tau-b per example (scipy.stats.kendalltau), over |scores| (magnitude, "
    "the paper's convention) and over signed scores",
    "intervals": f"{LEVEL:.0%} percentile bootstrap over examples, {RESAMPLES} resamples, seeded",
}
"""The protocol, in words (written into every table)."""


def _with(value: float, interval: tuple[float, float]) -> str:
    """``0.451 [0.382, 0.519]``."""
    return f"{format_number(value, 3)} {format_interval(interval, digits=3)}"


@dataclass(frozen=True)
class PairAgreement:
    """Kendall's τ-b between two methods over ``n`` examples under one convention."""

    first: str
    second: str
    convention: str
    mean: float
    sd: float
    n: int
    interval: tuple[float, float]  # bootstrap interval of the mean


@dataclass(frozen=True)
class MethodEraser:
    """One method's ERASER scores: per bin ``(bins,)`` means over examples, AOPC with intervals."""

    method: str
    signed: bool
    comprehensiveness: tuple[float, ...]
    sufficiency: tuple[float, ...]
    comprehensiveness_aopc: float
    sufficiency_aopc: float
    comprehensiveness_interval: tuple[float, float]
    sufficiency_interval: tuple[float, float]


@dataclass(frozen=True)
class FaithfulnessTable:
    """What :func:`replicate` measured; :meth:`markdown`, :meth:`to_json` and :meth:`save`."""

    n: int
    pairs: list[PairAgreement]
    eraser: list[MethodEraser]
    verdicts: dict[str, list[MethodVerdict]]  # {"magnitude": [...], "signed": [...]}
    taus: dict[str, list[float]]  # "first | second | convention" -> τ per example (plot)
    bins: tuple[float, ...] = BINS
    title: str = "Faithfulness"
    notes: tuple[str, ...] = ()  # e.g. the run, the data file and the test accuracy

    def markdown(self) -> str:
        """The three tables (τ per pair, ERASER, verdicts) and the protocol, as markdown."""
        level = f"{LEVEL:.0%}"
        lines = [f"# {self.title}", ""]
        lines += [f"- {note}" for note in self.notes]
        lines += [f"- examples: n={self.n}", ""]
        lines += [
            "## Rank agreement (Kendall's τ-b, mean ± sd over examples)",
            "",
            f"| pair | τ(\\|scores\\|) mean ± sd | {level} interval | τ(signed) mean ± sd | "
            f"{level} interval | n |",
            "|---|---|---|---|---|---|",
        ]
        by_pair: dict[tuple[str, str], dict[str, PairAgreement]] = {}
        for pair in self.pairs:
            by_pair.setdefault((pair.first, pair.second), {})[pair.convention] = pair
        for (first, second), both in by_pair.items():
            cells = []
            for convention in CONVENTIONS:
                p = both[convention]
                cells += [
                    f"{format_number(p.mean)} ± {format_number(p.sd)}",
                    format_interval(p.interval),
                ]
            lines.append(f"| {first} vs {second} | {' | '.join(cells)} | {both['magnitude'].n} |")
        lines += [
            "",
            "## ERASER (DeYoung et al. 2020): probability drop of the predicted class",
            "",
            "| method | signed scores | comprehensiveness AOPC | sufficiency AOPC | "
            + " | ".join(f"comp. {b:.0%}" for b in self.bins)
            + " |",
            "|---|---|---|---|" + "---|" * len(self.bins),
        ]
        for e in self.eraser:
            comp = " | ".join(format_number(v, 3) for v in e.comprehensiveness)
            lines.append(
                f"| {e.method} | {'yes' if e.signed else 'no'} | "
                f"{_with(e.comprehensiveness_aopc, e.comprehensiveness_interval)} | "
                f"{_with(e.sufficiency_aopc, e.sufficiency_interval)} | {comp} |"
            )
        lines += [
            "",
            "## Verdicts against leave-one-out",
            "",
            f"| method | convention | τ | {level} interval | gain | {level} interval | n | "
            "verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for convention in CONVENTIONS:
            for v in self.verdicts[convention]:
                lines.append(
                    f"| {v.method} | {v.tau_name.replace('|', chr(92) + '|')} | "
                    f"{format_number(v.tau)} | "
                    f"{format_interval(v.tau_interval)} | {format_percent(v.gain)} | "
                    f"{format_interval(v.gain_interval, percent=True)} | {v.n} | {v.label} |"
                )
        lines += ["", "## Protocol", ""]
        lines += [f"- {key}: {value}" for key, value in PROTOCOL.items()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        """Every number of :meth:`markdown` (and the per-example τ) as plain JSON values."""

        def verdict(v: MethodVerdict) -> dict:
            record = asdict(v)
            record.pop("examples")
            return record | {"verdict": v.verdict, "label": v.label, "gain": v.gain}

        return {
            "title": self.title,
            "notes": list(self.notes),
            "n": self.n,
            "protocol": PROTOCOL,
            "bins": list(self.bins),
            "pairs": [asdict(p) for p in self.pairs],
            "eraser": [asdict(e) for e in self.eraser],
            "verdicts": {c: [verdict(v) for v in vs] for c, vs in self.verdicts.items()},
            "taus": self.taus,
        }

    def plot(self, path: str | Path) -> Path:
        """τ per example for each pair (both conventions) and the ERASER curves, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
        names = list(self.taus)
        data = [[t for t in self.taus[name] if not math.isnan(t)] for name in names]
        left.boxplot(data, orientation="horizontal")
        left.set_yticks(range(1, len(names) + 1), [n.replace(" | ", "\n", 1) for n in names])
        left.tick_params(axis="y", labelsize=6)
        left.axvline(0.0, color="#888", linewidth=0.5)
        left.set_xlabel("Kendall's τ-b per example")
        left.set_title(f"rank agreement (n={self.n})", fontsize=9)
        for e in self.eraser:
            right.plot(
                [100 * b for b in self.bins], e.comprehensiveness, marker="o", label=e.method
            )
        right.set_xlabel("% of tokens removed (top-ranked first)")
        right.set_ylabel("comprehensiveness")
        right.set_title("ERASER comprehensiveness", fontsize=9)
        right.legend(fontsize=7)
        figure.tight_layout()
        path = Path(path)
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path

    def save(self, directory: str | Path, stem: str = "faithfulness") -> list[Path]:
        """Write ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        markdown, payload = directory / f"{stem}.md", directory / f"{stem}.json"
        markdown.write_text(self.markdown())
        payload.write_text(json.dumps(self.to_json(), indent=2))
        return [markdown, payload, self.plot(directory / f"{stem}.png")]


def pair_agreements(
    scores: Mapping[str, Tensor],
    mask: Tensor,
    pairs: Sequence[tuple[str, str]] | None = None,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> tuple[list[PairAgreement], dict[str, list[float]]]:
    """Kendall's τ-b per pair of methods (``{method: (B, N)}``, over ``mask (B, N)``) in both
    conventions: mean ± sd and a bootstrap interval of the mean; and τ per example by
    ``"first | second | convention"``. ``pairs`` default to every pair in ``scores`` order."""
    names = list(scores)
    chosen = pairs or [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    agreements, taus = [], {}
    for first, second in chosen:
        for convention in CONVENTIONS:
            result = rank_agreement(scores[first], scores[second], mask, convention)
            values = result.tau.numpy()
            interval = percentile_bootstrap(
                [values], lambda t: np.nanmean(t, axis=-1), resamples, LEVEL, seed
            )
            agreements.append(
                PairAgreement(
                    first, second, convention, result.mean_tau, result.sd_tau, result.n, interval
                )
            )
            taus[f"{first} | {second} | {convention}"] = [float(t) for t in values]
    return agreements, taus


def replicate(
    forward: Classifier,
    embeddings: Tensor,
    mask: Tensor,
    target: Tensor,
    scores: Mapping[str, Tensor],
    reference: str = "leave-one-out",
    pairs: Sequence[tuple[str, str]] | None = None,
    seed: int = 0,
    resamples: int = RESAMPLES,
    title: str = "Faithfulness",
    notes: Sequence[str] = (),
) -> FaithfulnessTable:
    """τ per pair of methods, ERASER per method and verdicts against ``reference``.

    Args:
        forward, embeddings, mask, target: the classifier and its inputs
            (:mod:`attnkit.interpret.attribution`): ``(B, N, E)``, ``(B, N)``, ``(B,)``.
        scores: ``{method: (B, N)}``, holding ``reference``.
        pairs: the method pairs to rank-compare (default: every pair, in ``scores`` order).
        seed: for the random ranking and the bootstraps.
    """
    if reference not in scores:
        raise ValueError(f"reference {reference!r} must be one of the scores {list(scores)}")
    agreements, taus = pair_agreements(scores, mask, pairs, seed, resamples)
    generator = torch.Generator().manual_seed(seed)
    rankings = {**scores, "random": torch.rand(mask.shape, generator=generator)}
    erased = []
    with torch.no_grad():
        for method, values in rankings.items():
            result = eraser(forward, embeddings, mask, target, values, BINS)
            comp, suff = (x.double().cpu().numpy() for x in result.example_aopc)

            def mean(x: np.ndarray) -> np.ndarray:
                return x.mean(-1)

            erased.append(
                MethodEraser(
                    method,
                    method != "random" and is_signed(method, values),
                    tuple(float(v) for v in result.comprehensiveness),
                    tuple(float(v) for v in result.sufficiency),
                    result.comprehensiveness_aopc,
                    result.sufficiency_aopc,
                    percentile_bootstrap([comp], mean, resamples, LEVEL, seed),
                    percentile_bootstrap([suff], mean, resamples, LEVEL, seed),
                )
            )
        judged = {name: value for name, value in scores.items() if name != reference}
        verdicts = {
            convention: judge(
                forward,
                embeddings,
                mask,
                target,
                judged,
                (reference, scores[reference]),
                seed=seed,
                convention=convention,
                resamples=resamples,
            )
            for convention in CONVENTIONS
        }
    return FaithfulnessTable(
        int(mask.shape[0]), agreements, erased, verdicts, taus, BINS, title, tuple(notes)
    )


def jain_wallace(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    seed: int = 0,
    resamples: int = RESAMPLES,
    title: str = "Faithfulness (Jain & Wallace 2019 protocol)",
    notes: Sequence[str] = (),
) -> tuple[FaithfulnessTable, Tensor]:
    """The protocol of the module docstring on an attnkit
    :class:`~attnkit.models.text.TextClassifier` with attention pooling (``"soft"`` or
    ``"multihead"``) and its :class:`~attnkit.interpret.loading.WordTokenizer`.

    Returns:
        The table and the predicted classes ``(B,)``.
    """
    if getattr(model, "pool", None) is None or model.config.attention == "hard":
        raise ValueError(
            "model must pool with soft attention ('soft' or 'multihead') for the Jain & Wallace "
            f"protocol, got attention={model.config.attention!r}"
        )
    model.eval()
    ids, mask, _ = tokenizer(list(texts))
    embeddings = model.embed(ids).detach()  # (B, N, E)

    def forward(inputs: Tensor, visible: Tensor) -> Tensor:
        return model.forward_embeddings(inputs, visible).logits

    def detached(inputs: Tensor, visible: Tensor) -> Tensor:
        return model.forward_embeddings(inputs, visible, detach_weights=True).logits

    with torch.no_grad():
        result = model.forward_embeddings(embeddings, mask)
    logits, pooling = result.logits, result.weights
    predicted = logits.argmax(-1)
    scores = {
        "attention pooling": pooling * mask,
        "gradient x input": gradient_x_input(detached, embeddings, mask, predicted),
        "leave-one-out": leave_one_out(forward, embeddings, mask, predicted),
    }
    pairs = [
        ("attention pooling", "gradient x input"),
        ("attention pooling", "leave-one-out"),
        ("gradient x input", "leave-one-out"),
    ]
    table = replicate(
        forward, embeddings, mask, predicted, scores, "leave-one-out", pairs, seed, resamples,
        title, notes,
    )  # fmt: skip
    return table, predicted


def run_faithfulness(
    run: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    limit: int | None = None,
    seed: int | None = None,
    options: Mapping[str, object] | None = None,
    resamples: int = RESAMPLES,
) -> tuple[FaithfulnessTable, list[Path]]:
    """What ``attnkit faithfulness RUN --data FILE`` does: load the run, re-split ``data`` as
    training did (the seed and file options recorded in ``RUN/data.json``, overridden by
    ``seed`` and ``options``), run :func:`jain_wallace` on the test split and save the table.

    Raises:
        ValueError: ``run`` is not an attnkit text run, the test split is empty, or an unknown
            file option.
    """
    from attnkit.data.text import read_text_splits, tokenize
    from attnkit.interpret.loading import load_explainable
    from attnkit.tasks.command import DATA_FILE
    from attnkit.tasks.text import FILE_OPTIONS

    run = Path(run)
    target = load_explainable(str(run))
    if target.kind != "attnkit":
        raise ValueError(f"RUN must be an attnkit text run (attnkit train text --out), got {run}")
    recorded_path = run / DATA_FILE if (run / DATA_FILE).is_file() else run.parent / DATA_FILE
    recorded = json.loads(recorded_path.read_text()) if recorded_path.is_file() else {}
    chosen = {**recorded.get("options", {}), **(options or {})}
    unknown = sorted(set(chosen) - set(FILE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown file option(s) {unknown}; known: {sorted(FILE_OPTIONS)}")
    split_seed = seed if seed is not None else int(recorded.get("seed", 0))
    settings = {**FILE_OPTIONS, **chosen}
    max_length, lowercase = int(settings.pop("max_length")), bool(settings["lowercase"])
    settings.pop("min_count")
    splits = read_text_splits(data, seed=split_seed, **settings)
    texts, labels = splits.texts["test"], splits.labels["test"]
    if not texts:
        raise ValueError(
            f"{data}: the test split is empty ({splits.how}); set -o test_fraction= above 0"
        )
    if limit is not None:
        texts, labels = texts[:limit], labels[:limit]
    texts = [" ".join(tokenize(t, lowercase)[:max_length]) for t in texts]  # as in training
    classes = list(target.classes)
    known = [label in classes for label in labels]
    notes = [
        f"run: {run}",
        f"data: {data}, test split ({splits.how}), seed {split_seed}",
        f"model: {target.model.config.attention} attention over {target.model.config.encoder_kind}",
    ]
    table, predicted = jain_wallace(target.model, target.tokenizer, texts, split_seed, resamples)
    if all(known):
        truth = torch.tensor([classes.index(label) for label in labels])
        notes.append(f"test accuracy: {float((predicted == truth).float().mean()):.3f}")
    table = FaithfulnessTable(
        table.n, table.pairs, table.eraser, table.verdicts, table.taus, table.bins,
        table.title, tuple(notes),
    )  # fmt: skip
    return table, table.save(out if out is not None else run)
