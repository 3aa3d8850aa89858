"""The small causal LM: Llama-compatible weights, KV-cache decoding, checkpoints, errors."""

import pytest
import torch

import attnkit
from attnkit.models.lm import CausalLM, CausalLMConfig

CONFIG = CausalLMConfig(vocab_size=97, dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
                        hidden_dim=96, max_seq_len=64)  # fmt: skip


@pytest.fixture
def lm():
    torch.manual_seed(0)
    return CausalLM(CONFIG).eval()


def _ids(batch=2, length=11, seed=0):
    return torch.randint(0, 97, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tie", [False, True])
def test_hugging_face_llama_gives_the_same_logits_and_tokens(tmp_path, tie):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    lm = CausalLM(CausalLMConfig(**{**CONFIG.__dict__, "tie_embeddings": tie})).eval()
    lm.save_pretrained(tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(lm(ids), hf(input_ids=ids).logits)
        ours = lm.generate(ids[:1, :4], max_new_tokens=6)
        theirs = hf.generate(
            ids[:1, :4], attention_mask=torch.ones(1, 4, dtype=torch.long), max_new_tokens=6,
            do_sample=False,
        )  # fmt: skip
    assert ours.tolist() == theirs.tolist()
    back = CausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(back(ids), lm(ids), rtol=0, atol=0)


def test_own_checkpoint_round_trip(lm, tmp_path):
    lm.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    loaded = CausalLM.load(tmp_path).eval()
    assert loaded.config == lm.config
    torch.testing.assert_close(loaded(_ids()), lm(_ids()), rtol=0, atol=0)


def test_kv_cache_decoding_equals_the_full_forward(lm):
    ids = _ids(length=9)
    full = lm(ids)
    cache = lm.new_cache()
    steps = [lm(ids[:, :3], cache=cache)] + [
        lm(ids[:, t : t + 1], cache=cache) for t in range(3, 9)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_padding_mask_hides_padded_keys(lm):
    ids = _ids(batch=1, length=8)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 8)], dim=1)
    with attnkit.capture(lm, weights=True) as rec:
        lm(padded, attention_mask=mask)
    for weights in rec.weights.values():
        assert weights[..., 3:, :3].eq(0).all()


def test_generation_options(lm):
    prompt = _ids(batch=2, length=3)
    greedy = lm.generate(prompt, max_new_tokens=5)
    assert greedy.shape == (2, 8) and torch.equal(greedy[:, :3], prompt)
    gen = torch.Generator().manual_seed(0)
    sampled = lm.generate(prompt, 5, temperature=1.0, top_k=5, generator=gen)
    assert sampled.shape == (2, 8)
    first = int(greedy[0, 3])
    stopped = lm.generate(prompt[:1], 5, eos_token_id=first)
    assert stopped.shape == (1, 4)  # the first new token was eos


def test_trains(lm):
    """A few steps on one repeated sequence drive its loss down."""
    lm.train()
    ids = _ids(batch=4, length=12)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits = lm(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 97), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_errors(lm):
    with pytest.raises(ValueError, match="dim .* must be num_heads"):
        CausalLMConfig(dim=60, num_heads=8)
    with pytest.raises(ValueError, match="vocab_size must be positive"):
        CausalLMConfig(vocab_size=0)
    with pytest.raises(ValueError, match="input_ids must be"):
        lm(torch.randn(2, 3))
    with pytest.raises(ValueError, match="one KVCache per block"):
        lm(_ids(), cache=[])
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate(_ids(), -1)
