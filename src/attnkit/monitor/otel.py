"""OpenTelemetry export: each :class:`~attnkit.llm.generation.GenerationTrace` as one span, sent
through ``opentelemetry-sdk`` to any OTLP endpoint (Arize Phoenix, Langfuse, an OTel collector).

The span follows the OpenInference semantic conventions for an LLM call (Arize's
``openinference-semantic-conventions``: ``openinference.span.kind = "LLM"``, ``llm.model_name``,
``input.value``/``output.value``, ``llm.output_messages``, ``llm.token_count.*``), so an
observability tool shows it as a generation, and carries attnkit's attention signals as
``attnkit.*`` attributes:

- ``attnkit.<signal>.mean``: the signal's mean over new tokens, layers and heads
  (:func:`~attnkit.llm.signals.signal_mean`; NaN without new tokens), for every per-token signal
  of the vocabulary (:data:`TOKEN_SIGNALS`, :data:`attnkit.llm.signals.TOKEN_SIGNALS`, a
  ``GenerationTrace`` field each: lookback ratio, Chuang et al. 2024; entropy; sink mass;
  largest weight; retrieval hits, Wu et al. 2024);
- ``attnkit.<signal>.per_token``: the per-token series (mean over layers and heads), a float array
  with one entry per new token: compact (one attribute, not one event per token);
- ``attnkit.layers``, ``attnkit.heads``, ``attnkit.context.start``/``.stop`` (token positions),
  ``attnkit.new_tokens``, ``attnkit.new_token_ids`` (int array);
- with ``events=True``, also one span event ``attnkit.token`` per new token with each signal's
  value for that token.

Use it as a trace hook, so that every :func:`attnkit.llm.generate` call is exported::

    exporter = OTelExporter(endpoint="http://127.0.0.1:6006/v1/traces", model_name="my-llm")
    handle = attnkit.llm.generation.add_trace_hook(exporter)   # handle.remove() stops it
    ...
    exporter.shutdown()                              # flush what is still batched
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from attnkit._moved import moved_name
from attnkit.llm.generation import GenerationTrace
from attnkit.llm.signals import TOKEN_SIGNALS, VOCABULARY, signal_mean

__all__ = ["OTelExporter", "span_attributes"]

PREFIX = "attnkit"


def _conventions():
    try:
        from openinference.semconv.trace import (
            MessageAttributes,
            OpenInferenceMimeTypeValues,
            OpenInferenceSpanKindValues,
            SpanAttributes,
        )
    except ImportError as error:  # pragma: no cover - the extra is missing
        raise ImportError(
            "attnkit.monitor.otel needs the otel extra: pip install 'attnkit[otel]'"
        ) from error
    return (
        SpanAttributes,
        MessageAttributes,
        OpenInferenceSpanKindValues,
        OpenInferenceMimeTypeValues,
    )


def span_attributes(
    trace: GenerationTrace,
    model_name: str | None = None,
    prompt: str | None = None,
    parameters: dict | None = None,
) -> dict[str, object]:
    """The span's attributes for one trace (OpenInference LLM attributes and ``attnkit.*``).

    Args:
        trace: from :func:`attnkit.llm.generate`; its per-token signals are ``(n, L, H)``.
        model_name: ``llm.model_name`` (omitted when ``None``).
        prompt: the prompt's text, as ``input.value`` (a trace holds only its token ids).
        parameters: generation settings, as JSON in ``llm.invocation_parameters``.

    Returns:
        ``{attribute: value}`` with OTel attribute types only (str, int, float, bool and
        homogeneous lists of them).
    """
    if not isinstance(trace, GenerationTrace):
        raise TypeError(f"trace must be a GenerationTrace, got {type(trace).__name__}")
    span, message, kinds, mime = _conventions()
    prompt_tokens, new_tokens = len(trace.prompt_ids), len(trace.new_ids)
    attributes: dict[str, object] = {
        span.OPENINFERENCE_SPAN_KIND: kinds.LLM.value,
        span.OUTPUT_VALUE: trace.text,
        span.OUTPUT_MIME_TYPE: mime.TEXT.value,
        f"{span.LLM_OUTPUT_MESSAGES}.0.{message.MESSAGE_ROLE}": "assistant",
        f"{span.LLM_OUTPUT_MESSAGES}.0.{message.MESSAGE_CONTENT}": trace.text,
        span.LLM_TOKEN_COUNT_PROMPT: prompt_tokens,
        span.LLM_TOKEN_COUNT_COMPLETION: new_tokens,
        span.LLM_TOKEN_COUNT_TOTAL: prompt_tokens + new_tokens,
        f"{PREFIX}.layers": list(trace.layers),
        f"{PREFIX}.heads": int(trace.lookback_ratio.shape[-1]),
        f"{PREFIX}.new_tokens": new_tokens,
        f"{PREFIX}.new_token_ids": [int(i) for i in trace.new_ids.tolist()],
        f"{PREFIX}.context.start": int(trace.context[0]),
        f"{PREFIX}.context.stop": int(trace.context[1]),
    }
    if model_name is not None:
        attributes[span.LLM_MODEL_NAME] = model_name
    if prompt is not None:
        attributes[span.INPUT_VALUE] = prompt
        attributes[span.INPUT_MIME_TYPE] = mime.TEXT.value
        attributes[f"{span.LLM_INPUT_MESSAGES}.0.{message.MESSAGE_ROLE}"] = "user"
        attributes[f"{span.LLM_INPUT_MESSAGES}.0.{message.MESSAGE_CONTENT}"] = prompt
    if parameters:
        attributes[span.LLM_INVOCATION_PARAMETERS] = json.dumps(parameters, default=str)
    for name, series in _series(trace).items():
        mean = signal_mean(getattr(trace, VOCABULARY[name].field), name)
        attributes[f"{PREFIX}.{name}.mean"] = math.nan if mean is None else mean
        attributes[f"{PREFIX}.{name}.per_token"] = series
    return attributes


def _series(trace: GenerationTrace) -> dict[str, list[float]]:
    """Each signal per new token, mean over layers and heads: ``{signal: [n floats]}``."""
    return {
        name: [
            float(v) for v in getattr(trace, VOCABULARY[name].field).float().mean((1, 2)).tolist()
        ]
        for name in TOKEN_SIGNALS
    }


class OTelExporter:
    """Send traces as spans to an OTLP endpoint (or through a tracer provider you already have).

    Args:
        endpoint: OTLP/HTTP traces URL, e.g. ``http://127.0.0.1:6006/v1/traces`` (Phoenix);
            ignored when ``tracer_provider`` is given.
        tracer_provider: an ``opentelemetry.sdk.trace.TracerProvider`` to use instead (for
            example one with an ``InMemorySpanExporter``, or your application's).
        model_name: ``llm.model_name`` of every span.
        service_name: the OTel resource's ``service.name`` (a Phoenix project reads
            ``openinference.project.name``, set to ``project`` when given).
        project: Phoenix project name (resource attribute ``openinference.project.name``).
        events: also add one ``attnkit.token`` event per new token.
        span_name: the spans' name.

    Calling the exporter with a trace sends one span; it is a valid
    :func:`attnkit.llm.generation.add_trace_hook` hook. :meth:`shutdown` flushes and closes the
    provider it created.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        tracer_provider=None,
        model_name: str | None = None,
        service_name: str = "attnkit",
        project: str | None = None,
        events: bool = False,
        span_name: str = "attnkit.generate",
    ) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as error:  # pragma: no cover - the extra is missing
            raise ImportError(
                "attnkit.monitor.otel needs the otel extra: pip install 'attnkit[otel]'"
            ) from error
        if tracer_provider is None and endpoint is None:
            raise ValueError("give endpoint (an OTLP/HTTP traces URL) or tracer_provider")
        self._owned = tracer_provider is None
        if tracer_provider is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            resource = {"service.name": service_name}
            if project is not None:
                resource["openinference.project.name"] = project
            tracer_provider = TracerProvider(resource=Resource.create(resource))
            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint)))
        self.provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("attnkit.monitor.otel")
        self.model_name = model_name
        self.events = events
        self.span_name = span_name

    def __call__(
        self,
        trace: GenerationTrace,
        prompt: str | None = None,
        parameters: dict | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
    ) -> None:
        """Export one trace as a span (``start_time``/``end_time`` in ns since the epoch;
        default now)."""
        attributes = span_attributes(trace, self.model_name, prompt, parameters)
        span = self.tracer.start_span(self.span_name, attributes=attributes, start_time=start_time)
        if self.events:
            series = _series(trace)
            ids = trace.new_ids.tolist()
            for t in range(len(ids)):
                values: dict[str, object] = {"index": t, "token_id": int(ids[t])}
                values.update({name: series[name][t] for name in TOKEN_SIGNALS})
                span.add_event(f"{PREFIX}.token", values)
        span.end(end_time=end_time)

    def export(self, traces: Sequence[GenerationTrace], prompts: Sequence[str] | None = None):
        """Export several traces (with their prompts' text, when given)."""
        if prompts is not None and len(prompts) != len(traces):
            raise ValueError(
                f"prompts must have one entry per trace ({len(traces)}), got {len(prompts)}"
            )
        for i, trace in enumerate(traces):
            self(trace, None if prompts is None else prompts[i])

    def flush(self, timeout_millis: int = 30_000) -> bool:
        """Send every span still batched; ``True`` when all went out in time."""
        return self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush and close the provider this exporter created (not one it was given)."""
        self.flush()
        if self._owned:
            self.provider.shutdown()


def __getattr__(name: str):
    return moved_name(__name__, name)
