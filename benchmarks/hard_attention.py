"""Hard vs soft attention vs a plain CNN on cluttered translated MNIST (Mnih et al. 2014).

Trains each model on the same stream of generated canvases at three clutter levels and reports,
on held-out canvases built from held-out digits: accuracy, the numbers each model reads per image
(hard attention reads ``glimpses · scales · patch²`` retina values; soft attention and the CNN
read all ``60 x 60`` pixels), the share of the canvas inside some glimpse window, and the training
time. Prints a markdown table, writes JSON and two PNGs (accuracy vs clutter, glimpse paths).

    python benchmarks/hard_attention.py            # full run, about 40 minutes on 1 thread
    python benchmarks/hard_attention.py --fast     # a smoke run in well under a minute
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.data.cluttered import load_digits, make_cluttered, split_digits
from attnkit.models.glimpse import ConvConfig, ConvNet, GlimpseConfig, GlimpseNetwork
from attnkit.tasks.glimpse import evaluate, train_classifier
from attnkit.train import count_parameters
from harness import machine

CLUTTER = {"none": 0, "some": 4, "heavy": 16}  # fragments of 8 x 8 per 60 x 60 canvas
MODELS = ["reinforce", "gumbel", "soft", "cnn"]
TRAIN_DIGITS_PER_EPOCH = 4000
BATCH = 64


def build(name: str, glimpses: int) -> GlimpseNetwork | ConvNet:
    if name == "cnn":
        return ConvNet(ConvConfig())
    return GlimpseNetwork(GlimpseConfig(attention=name, glimpses=glimpses))


def seeds_for(seed: int, clutter: int) -> dict:
    """Seeds of one clutter level: training epoch ``e`` uses ``train + e``."""
    base = seed * 100_000 + clutter * 1_000
    return {"train": base, "test": base + 999}


def run(args: argparse.Namespace) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    images, labels = load_digits()
    train_idx, test_idx = split_digits(labels, test_fraction=0.2, seed=args.seed)
    results, paths = [], {}
    progress = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
    )
    with progress:
        for level, clutter in CLUTTER.items():
            seeds = seeds_for(args.seed, clutter)
            test = make_cluttered(
                images[test_idx], labels[test_idx], args.test, clutter=clutter, seed=seeds["test"]
            )
            epochs: dict[int, object] = {}

            def batches(step: int, clutter=clutter, seeds=seeds, epochs=epochs):
                epoch, offset = divmod(step * BATCH, args.epoch_size)
                if epoch not in epochs:
                    epochs.clear()
                    epochs[epoch] = make_cluttered(
                        images[train_idx],
                        labels[train_idx],
                        args.epoch_size,
                        clutter=clutter,
                        seed=seeds["train"] + epoch,
                    )
                data = epochs[epoch]
                index = torch.arange(offset, offset + BATCH) % args.epoch_size
                return data.images[index], data.labels[index]

            for name in MODELS:
                torch.manual_seed(args.seed)
                model = build(name, args.glimpses)
                task = progress.add_task(f"{name} / {level}", total=args.steps, loss=float("nan"))
                start = time.perf_counter()
                losses = train_classifier(
                    model,
                    batches,
                    args.steps,
                    lr=args.lr,
                    on_step=lambda step, loss, task=task: progress.update(
                        task, completed=step + 1, loss=loss
                    ),
                )
                train_time = time.perf_counter() - start
                start = time.perf_counter()
                metrics = evaluate(model, test.images, test.labels)
                eval_time = time.perf_counter() - start
                paths[(name, level)] = metrics.pop("locations")[: args.pictures]
                results.append(
                    {
                        "model": name,
                        "clutter": level,
                        "fragments": clutter,
                        "accuracy": metrics["accuracy"],
                        "pixels_read": metrics["pixels_read"],
                        "coverage": metrics["coverage"],
                        "train_time_s": train_time,
                        "eval_ms_per_image": 1000 * eval_time / args.test,
                        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
                        "parameters": count_parameters(model),
                    }
                )
            paths[("images", level)] = test.images[: args.pictures]
    return {"results": results, "paths": paths}


def table(results: list[dict]) -> str:
    lines = [
        "| model | clutter | accuracy | values read / image | canvas covered | train time (s) |"
        " params |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['clutter']} ({r['fragments']}) | {r['accuracy']:.3f} | "
            f"{r['pixels_read']} ({r['pixels_read'] / 36:.0f}%) | {100 * r['coverage']:.0f}% | "
            f"{r['train_time_s']:.0f} | {r['parameters'] / 1000:.0f}k |"
        )
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The results table under a line that says what was trained, where and when."""
    about, settings = report["machine"], report["settings"]
    header = (
        f"Cluttered MNIST (60x60 canvases), {settings['steps']} steps per model, seed "
        f"{report['seeds']['seed']}, {settings['glimpses']} glimpses; {about['cpu']}, "
        f"{about['threads']} threads, torch {about['torch']}; "
        f"{about.get('date', 'date not recorded')}. Figures: "
        + ", ".join(f"`{Path(p).name}`" for p in report["plots"])
        + "."
    )
    return header + "\n\n" + table(report["results"])


def plot(results: list[dict], paths: dict, out: Path, suffix: str, glimpses: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in MODELS:
        rows = [r for r in results if r["model"] == name]
        ax.plot([r["fragments"] for r in rows], [r["accuracy"] for r in rows], "o-", label=name)
    ax.set_xlabel("clutter fragments per 60 x 60 canvas")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.grid(alpha=0.3)
    accuracy_png = out / f"hard_attention_accuracy{suffix}.png"
    fig.tight_layout()
    fig.savefig(accuracy_png, dpi=120)
    plt.close(fig)

    config = GlimpseConfig(glimpses=glimpses)
    level = list(CLUTTER)[-1]
    images = paths[("images", level)]
    shown = [name for name in MODELS if name != "cnn"]
    fig, axes = plt.subplots(len(shown), len(images), figsize=(2 * len(images), 2 * len(shown)))
    largest = config.patch * 2 ** (config.scales - 1)
    for row, name in enumerate(shown):
        for col, image in enumerate(images):
            ax = axes[row, col]
            ax.imshow(image[0], cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            centres = []
            for step, location in enumerate(paths[(name, level)][col].tolist()):
                r, c = divmod(location, config.side)
                top, left = r * config.stride, c * config.stride
                colour = plt.cm.autumn(step / max(1, config.glimpses - 1))
                ax.add_patch(
                    patches.Rectangle(
                        (left - 0.5, top - 0.5), config.patch, config.patch, fill=False, ec=colour
                    )
                )
                centre = (left + config.patch / 2 - 0.5, top + config.patch / 2 - 0.5)
                if step == 0:
                    ax.add_patch(
                        patches.Rectangle(
                            (centre[0] - largest / 2, centre[1] - largest / 2),
                            largest,
                            largest,
                            fill=False,
                            ec=colour,
                            ls=":",
                        )
                    )
                ax.text(*centre, str(step + 1), color=colour, ha="center", va="center")
                centres.append(centre)
            ax.plot(*zip(*centres, strict=True), color="tab:blue", lw=0.8)
        axes[row, 0].set_ylabel(name if name != "soft" else "soft (argmax)")
    fig.suptitle(
        f"glimpse paths, {level} clutter (1 = first; dotted: first glimpse's widest scale)"
    )
    paths_png = out / f"hard_attention_glimpses{suffix}.png"
    fig.tight_layout()
    fig.savefig(paths_png, dpi=100)
    plt.close(fig)
    return [str(accuracy_png), str(paths_png)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="a smoke run: few steps, small sets")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--glimpses", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.steps = args.steps or (30 if args.fast else 2000)
    args.test = 200 if args.fast else 1000
    args.epoch_size = 500 if args.fast else TRAIN_DIGITS_PER_EPOCH
    args.pictures = 6
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_fast" if args.fast else ""

    started = time.perf_counter()
    outcome = run(args)
    results = outcome["results"]
    pngs = plot(results, outcome["paths"], args.out, suffix, args.glimpses)
    report = {
        "benchmark": "hard_attention",
        "machine": machine(),
        "seeds": {
            "seed": args.seed,
            "digit_split": args.seed,
            "model_init": args.seed,
            **{level: seeds_for(args.seed, c) for level, c in CLUTTER.items()},
        },
        "settings": {
            "steps": args.steps,
            "batch": BATCH,
            "lr": args.lr,
            "glimpses": args.glimpses,
            "train_canvases_per_epoch": args.epoch_size,
            "test_canvases": args.test,
            "clutter_fragments": CLUTTER,
            "glimpse_config": asdict(GlimpseConfig(glimpses=args.glimpses)),
            "conv_config": asdict(ConvConfig()),
        },
        "results": results,
        "plots": pngs,
        "total_time_s": time.perf_counter() - started,
    }
    json_path = args.out / f"hard_attention{suffix}.json"
    json_path.write_text(json.dumps(report, indent=2))
    (args.out / f"hard_attention{suffix}.md").write_text(markdown(report) + "\n")
    print(table(results))
    print(f"\nmachine: {report['machine']}")
    print(f"seeds: {report['seeds']}")
    print(f"wrote {json_path} and {', '.join(pngs)}")


if __name__ == "__main__":
    main()
