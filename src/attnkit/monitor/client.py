"""The Python client: ``Monitor(url).log(trace, tags=...)`` records generations, in batches.

A record is a summary of one :class:`attnkit.llm.generate.GenerationTrace`: the mean over new
tokens, layers and heads of the lookback ratio (Chuang et al. 2024), attention entropy, sink mass
and largest weight, the prompt and answer lengths, optionally a Lookback Lens detector's score
and a compact per-token trace (per token means over layers and heads, and the context tokens the
answer copied from, found by retrieval heads as in Wu et al. 2024).

Records are buffered and written by a background thread every ``flush_interval`` seconds or when
``batch_size`` of them wait, to the HTTP API (``http://...``) or straight to a database
(a :class:`~attnkit.monitor.store.Store` or its URL). Request ids make re-sending harmless, so a
batch that failed is kept and sent again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from attnkit.monitor.store import Store

__all__ = ["Monitor", "MonitorConfig", "summarize", "token_trace"]

log = logging.getLogger(__name__)

MAX_CONTEXT_TOKENS = 2048  # context tokens kept in a per-token trace (the first ones)


def _mean(values) -> float:
    return float(values.float().mean()) if values.numel() else 0.0


def _token_texts(ids: list[int], tokenizer) -> list[str]:
    if tokenizer is None:
        return [str(i) for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def token_trace(trace, tokenizer=None) -> dict[str, Any]:
    """Compact per-token trace of a generation: what the dashboard's drill-down shows.

    Returns a JSON-ready dict: ``tokens`` (the answer's tokens as text, ids without a
    tokenizer), per token means over layers and heads of ``lookback_ratio``, ``entropy``,
    ``sink``, ``max_weight``, the share of heads that copied it from the context
    (``retrieval``), ``context`` (its first :data:`MAX_CONTEXT_TOKENS` tokens and where it
    starts in the prompt) and ``leaned_on``: per answer token, ``[position in context, share of
    heads]`` for each context token it was copied from.
    """
    new_ids = trace.new_ids.tolist()
    start, stop = trace.context
    context_ids = trace.prompt_ids[start:stop].tolist()
    shown = context_ids[:MAX_CONTEXT_TOKENS]
    retrieval = trace.retrieval.float().mean((1, 2))  # (n,) share of heads that copied
    leaned_on = []
    for token, share in zip(new_ids, retrieval.tolist(), strict=True):
        where = [i for i, c in enumerate(shown) if c == token] if share > 0 else []
        leaned_on.append([[i, round(share, 4)] for i in where])

    def per_token(values) -> list[float]:
        return [round(v, 4) for v in values.float().mean((1, 2)).tolist()]

    return {
        "tokens": _token_texts(new_ids, tokenizer),
        "lookback_ratio": per_token(trace.lookback_ratio),
        "entropy": per_token(trace.entropy),
        "sink": per_token(trace.sink),
        "max_weight": per_token(trace.max_weight),
        "retrieval": [round(v, 4) for v in retrieval.tolist()],
        "context": {
            "start": start,
            "tokens": _token_texts(shown, tokenizer),
            "truncated": len(context_ids) > len(shown),
        },
        "leaned_on": leaned_on,
    }


def summarize(
    trace,
    *,
    tags: Mapping[str, str] | None = None,
    request_id: str | None = None,
    detector=None,
    tokenizer=None,
    per_token: bool = False,
    at: float | None = None,
) -> dict[str, Any]:
    """The record of one generation (the body of ``POST /v1/records``).

    Args:
        trace: a :class:`~attnkit.llm.generate.GenerationTrace`.
        tags: string tags; ``model`` and ``version`` go to their own (indexed) fields.
        request_id: unique id of the request (default: a random UUID).
        detector: a fitted :class:`~attnkit.llm.detector.LookbackLens`; its probability of
            hallucination over the whole answer becomes ``detector_score``.
        tokenizer: decodes token texts for the per-token trace.
        per_token: attach :func:`token_trace`.
        at: time of the generation, seconds since the epoch (default now).

    A generation without new tokens has no signals: its means are recorded as 0.
    """
    tags = dict(tags or {})
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"tags must map str to str, got {key!r}: {value!r}")
    score = None
    if detector is not None and len(trace.new_ids):
        from attnkit.llm.detector import span_features

        score = float(detector.predict_proba(span_features(trace.lookback_ratio)[None])[0])
    return {
        "request_id": request_id or uuid.uuid4().hex,
        "time": time.time() if at is None else float(at),
        "model": tags.pop("model", ""),
        "version": tags.pop("version", ""),
        "tags": tags,
        "lookback_ratio": _mean(trace.lookback_ratio),
        "entropy": _mean(trace.entropy),
        "sink": _mean(trace.sink),
        "max_weight": _mean(trace.max_weight),
        "detector_score": score,
        "prompt_tokens": len(trace.prompt_ids),
        "new_tokens": len(trace.new_ids),
        "trace": token_trace(trace, tokenizer) if per_token else None,
    }


@dataclass(frozen=True)
class MonitorConfig:
    """How a :class:`Monitor` batches and summarizes."""

    batch_size: int = 100  # records per write; a full batch is written at once
    flush_interval: float = 2.0  # seconds between background writes of a partial batch
    max_buffer: int = 100_000  # records kept while the target is unreachable (oldest dropped)
    timeout: float = 10.0  # seconds per HTTP request
    per_token: bool = False  # attach the compact per-token trace to every record

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not self.flush_interval > 0:
            raise ValueError(f"flush_interval must be positive, got {self.flush_interval}")
        if self.max_buffer < self.batch_size:
            raise ValueError(f"max_buffer must be >= batch_size, got {self.max_buffer}")


class Monitor:
    """Logs generations to the monitoring service or a database, in background batches.

    Args:
        target: the service's base URL (``http://host:port``), a database URL
            (``sqlite:///file.db``, ``postgresql://...``) or a :class:`Store`.
        token: bearer token for the service.
        tags: tags added to every record (``log``'s tags win).
        detector: a fitted Lookback Lens for ``detector_score``.
        tokenizer: decodes token texts of per-token traces.
        config: batching and summary options; ``batch_size``, ``flush_interval`` and
            ``per_token`` may also be given directly.

    Use as a context manager, or call :meth:`close`, so the last batch is written.
    """

    def __init__(
        self,
        target: str | Store,
        token: str | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        detector=None,
        tokenizer=None,
        config: MonitorConfig | None = None,
        **options,
    ) -> None:
        self.config = MonitorConfig(**options) if config is None else config
        self.tags = dict(tags or {})
        self.detector, self.tokenizer = detector, tokenizer
        self._send = self._sender(target, token)
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards the buffer
        self._send_lock = threading.Lock()  # one write at a time, in order
        self._wake = threading.Event()
        self._closed = False
        self._handles: list = []  # hooks registered by attach(), removed by close()
        self._thread = threading.Thread(target=self._run, name="attnkit-monitor", daemon=True)
        self._thread.start()

    def _sender(self, target: str | Store, token: str | None) -> Callable[[list], None]:
        if isinstance(target, Store):
            return target.insert
        if not isinstance(target, str):
            raise TypeError(f"target must be a URL or a Store, got {type(target).__name__}")
        if target.startswith(("http://", "https://")):
            import httpx

            headers = {"Authorization": f"Bearer {token}"} if token else {}
            self._http = httpx.Client(base_url=target, headers=headers, timeout=self.config.timeout)

            def send(records: list) -> None:
                response = self._http.post("/v1/records/batch", json={"records": records})
                if response.status_code in (400, 413, 422):  # sending it again cannot help
                    log.error("monitor service refused %d records: %s", len(records), response.text)
                    return
                if response.status_code >= 400:
                    raise RuntimeError(
                        f"the monitor service answered {response.status_code}: {response.text}"
                    )

            return send
        store = Store(target)
        store.upgrade()
        self._store = store
        return store.insert

    def log(
        self, trace, tags: Mapping[str, str] | None = None, request_id: str | None = None
    ) -> str:
        """Queue the summary of one generation; returns its request id."""
        record = summarize(
            trace,
            tags={**self.tags, **(tags or {})},
            request_id=request_id,
            detector=self.detector,
            tokenizer=self.tokenizer,
            per_token=self.config.per_token,
        )
        self.log_record(record)
        return record["request_id"]

    def log_record(self, record: Mapping[str, Any]) -> None:
        """Queue a record that is already summarized (see :func:`summarize`)."""
        if self._closed:
            raise ValueError("the monitor is closed")
        with self._lock:
            self._buffer.append(dict(record))
            dropped = len(self._buffer) - self.config.max_buffer
            if dropped > 0:
                del self._buffer[:dropped]
                log.warning("monitor buffer full: dropped the %d oldest records", dropped)
            full = len(self._buffer) >= self.config.batch_size
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Records queued and not yet written."""
        with self._lock:
            return len(self._buffer)

    def flush(self) -> None:
        """Write every queued record now; raises if the target refuses them."""
        with self._send_lock:
            while True:
                with self._lock:
                    batch = self._buffer[: self.config.batch_size]
                if not batch:
                    return
                self._send(batch)
                with self._lock:
                    del self._buffer[: len(batch)]

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.config.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception as error:  # kept for the next try; the service may be restarting
                log.warning("monitor could not write %d records: %s", self.pending, error)

    def attach(self):
        """Log every :func:`attnkit.llm.generate.generate` call until :meth:`close`; returns the
        hook's handle (``handle.remove()`` detaches earlier)."""
        from attnkit.llm.generate import add_trace_hook

        handle = add_trace_hook(self.log)
        self._handles.append(handle)
        return handle

    def close(self) -> None:
        """Write what is queued and stop the background thread."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            handle.remove()
        self._wake.set()
        self._thread.join()
        try:
            self.flush()
        finally:
            if hasattr(self, "_http"):
                self._http.close()
            if hasattr(self, "_store"):
                self._store.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
