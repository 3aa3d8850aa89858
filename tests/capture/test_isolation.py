"""capture() touches only the model it was given: other models, left-out layers and other
threads run as they would without it; what it cannot read is refused at the start."""

import threading

import pytest
import torch

import attnkit

transformers = pytest.importorskip("transformers")


def _llama(implementation):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    config._attn_implementation = implementation
    return transformers.LlamaForCausalLM(config).eval()


def _gemma2():
    torch.manual_seed(1)
    config = transformers.Gemma2Config(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8,
        attn_logit_softcapping=2.0, sliding_window=4,
    )  # fmt: skip
    config._attn_implementation = "eager"
    return transformers.Gemma2ForCausalLM(config).eval()


IDS = torch.randint(3, 50, (1, 8), generator=torch.Generator().manual_seed(0))


def test_other_models_and_left_out_layers_run_untouched(monkeypatch):
    captured, other, gemma = _llama("sdpa"), _llama("sdpa"), _gemma2()
    with torch.no_grad():
        expected_other, expected_gemma = other(IDS).logits, gemma(IDS).logits
    calls = []
    from attnkit.recording import hf

    real = hf.attend

    def counted(module, *args, **kwargs):
        calls.append(module)
        return real(module, *args, **kwargs)

    monkeypatch.setattr(hf, "attend", counted)
    with (
        torch.no_grad(),
        attnkit.capture(captured, stats=("entropy",), layers=["model.layers.1.self_attn"]) as rec,
    ):
        assert other.config._attn_implementation == "sdpa"
        torch.testing.assert_close(other(IDS).logits, expected_other, atol=0, rtol=0)
        torch.testing.assert_close(gemma(IDS).logits, expected_gemma, atol=0, rtol=0)
        captured(IDS)
    # only the chosen layer of the captured model ran through attnkit
    assert calls == [captured.model.layers[1].self_attn]
    assert list(rec.stats["entropy"]) == ["model.layers.1.self_attn"]


def test_blocks_in_threads_record_only_their_own_model():
    models = [_llama("sdpa") for _ in range(2)]
    with torch.no_grad():
        expected = [m(IDS).logits for m in models]
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def work(i):
        try:
            with torch.no_grad(), attnkit.capture(models[i], weights=True) as rec:
                barrier.wait()
                for _ in range(3):
                    logits = models[i](IDS).logits
            results[i] = (logits, rec.weights["model.layers.0.self_attn"].shape)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, model in enumerate(models):
        torch.testing.assert_close(results[i][0], expected[i], atol=1e-5, rtol=0)
        assert results[i][1] == (1, 4, 24, 8)  # three calls of 8 queries, its own only
        assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("implementation", ["flex_attention", "flash_attention_2", "paged|eager"])
def test_unreadable_implementations_are_refused_at_the_start(implementation):
    model = _llama("sdpa")
    model.config._attn_implementation_internal = implementation  # as loaded with it
    with (
        pytest.raises(ValueError, match=r"attn_implementation='sdpa'") as error,
        attnkit.capture(model, stats=("entropy",)),
    ):
        pytest.fail("the block must not start")
    assert implementation in str(error.value)
    assert model.config._attn_implementation == implementation
