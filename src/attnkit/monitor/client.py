"""The Python client: ``Monitor(url).log(trace, tags=...)`` records generations, in batches.

A record is a summary of one :class:`attnkit.llm.generation.GenerationTrace`: the mean over new
tokens, layers and heads of the lookback ratio (Chuang et al. 2024), attention entropy, sink mass
and largest weight, the prompt and answer lengths, optionally a Lookback Lens detector's score
and a compact per-token trace (per token means over layers and heads, and the context tokens the
answer copied from, found by retrieval heads as in Wu et al. 2024).

Records are buffered and written by a background thread every ``flush_interval`` seconds or when
``batch_size`` of them wait, to the HTTP API (``http://...``) or straight to a database
(a :class:`~attnkit.monitor.store.Store` or its URL). No good record is lost to a bad one:

- :meth:`Monitor.log_record` checks each record against the service's schema
  (:class:`~attnkit.monitor.schemas.RecordIn`) and raises ``ValueError`` for that record only;
- a batch the target refuses (HTTP 400/413/422, or a record the store refuses) is split in halves
  until the refused records are alone; they go to the bounded dead-letter list
  :attr:`Monitor.rejected`, every other record is written;
- a target that cannot be reached is retried with exponential backoff (one warning per outage);
  request ids make re-sending harmless, so nothing is written twice;
- queued records are written at interpreter exit and on SIGTERM; :meth:`Monitor.close` raises
  when it could not write them and keeps them in :attr:`Monitor.unsent`, and at exit they are
  saved to a JSONL file named in an ERROR log line.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import json
import logging
import math
import os
import signal
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from attnkit._moved import moved_name
from attnkit.llm.signals import TOKEN_SIGNALS, TRACE_SIGNALS, VOCABULARY, signal_mean
from attnkit.llm.tokens import token_texts
from attnkit.monitor.store import Store

__all__ = ["Monitor", "MonitorConfig", "Rejected", "check_record", "summarize", "token_trace"]

log = logging.getLogger(__name__)

MAX_CONTEXT_TOKENS = 2048  # context tokens kept in a per-token trace (the first ones)
MAX_LEANED_ON = 32  # context positions named per answer token (schemas.MAX_LEANED_ON)
REFUSED = (400, 413, 422)  # the service will never take these bodies: split, then dead-letter


def __getattr__(name: str):
    return moved_name(__name__, name)  # ROUNDING moved to attnkit.llm.signals


def token_trace(trace, tokenizer=None) -> dict[str, Any]:
    """Compact per-token trace of a generation: what the dashboard's drill-down shows.

    Returns a JSON-ready dict: ``tokens`` (the answer's tokens as text by
    :func:`~attnkit.llm.tokens.token_texts`, as the eval report shows them; ids without a
    tokenizer), per token means over layers and heads of every per-token signal
    (:data:`~attnkit.llm.signals.TOKEN_SIGNALS`: ``lookback_ratio``, ``entropy``, ``sink``,
    ``max_weight``, and ``retrieval``, the share of heads that copied it from the context),
    ``context`` (its first :data:`MAX_CONTEXT_TOKENS` tokens and where it starts in the prompt)
    and ``leaned_on``: per answer token, ``[position in context, share of heads]`` for each
    context token it was copied from.
    """
    new_ids = trace.new_ids.tolist()
    start, stop = trace.context
    context_ids = trace.prompt_ids[start:stop].tolist()
    shown = context_ids[:MAX_CONTEXT_TOKENS]
    retrieval = trace.retrieval.float().mean((1, 2))  # (n,) share of heads that copied
    leaned_on = []
    for token, share in zip(new_ids, retrieval.tolist(), strict=True):
        where = [i for i, c in enumerate(shown) if c == token] if share > 0 else []
        # the last MAX_LEANED_ON occurrences (the schema's bound): the nearest copies
        leaned_on.append([[i, round(share, 4)] for i in where[-MAX_LEANED_ON:]])

    def per_token(name: str) -> list[float]:
        values = getattr(trace, VOCABULARY[name].field).float().mean((1, 2))  # (n,)
        return [round(v, 4) for v in values.tolist()]

    return {
        "tokens": token_texts(new_ids, tokenizer),
        **{name: per_token(name) for name in TOKEN_SIGNALS},
        "context": {
            "start": start,
            "tokens": token_texts(shown, tokenizer),
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
        trace: a :class:`~attnkit.llm.generation.GenerationTrace`.
        tags: string tags; ``model`` and ``version`` go to their own (indexed) fields.
        request_id: unique id of the request (default: a random UUID).
        detector: a fitted lookback lens: :func:`attnkit.llm.detection.recommended_detector`
            (the detector the hallucination benchmark supports) or a
            :class:`~attnkit.llm.lookback_lens.LookbackLens`; its probability of hallucination
            of the answer (:func:`~attnkit.llm.detection.answer_score`) becomes
            ``detector_score``.
        tokenizer: decodes token texts for the per-token trace.
        per_token: attach :func:`token_trace`.
        at: time of the generation, seconds since the epoch (default now).

    A generation without new tokens has no signals (:func:`~attnkit.llm.signals.signal_mean`
    gives None): its means are recorded as 0, as the schema needs numbers. A mean that float
    rounding puts at most :data:`~attnkit.llm.signals.ROUNDING` outside its signal's range is
    clipped to it.
    """
    tags = dict(tags or {})
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"tags must map str to str, got {key!r}: {value!r}")
    score = None
    if detector is not None and len(trace.new_ids):
        from attnkit.llm.detection import answer_score

        score = answer_score(detector, trace)
    return {
        "request_id": request_id or uuid.uuid4().hex,
        "time": time.time() if at is None else float(at),
        "model": tags.pop("model", ""),
        "version": tags.pop("version", ""),
        "tags": tags,
        **{name: _mean(trace, name) for name in TRACE_SIGNALS},
        "detector_score": score,
        "prompt_tokens": len(trace.prompt_ids),
        "new_tokens": len(trace.new_ids),
        "trace": token_trace(trace, tokenizer) if per_token else None,
    }


def _mean(trace, name: str) -> float:
    mean = signal_mean(getattr(trace, VOCABULARY[name].field), name)
    return 0.0 if mean is None else mean  # no new tokens: recorded as 0


@dataclass(frozen=True)
class MonitorConfig:
    """How a :class:`Monitor` batches, summarizes and retries."""

    batch_size: int = 100  # records per write; a full batch is written at once
    flush_interval: float = 2.0  # seconds between background writes of a partial batch
    max_buffer: int = 100_000  # records kept while the target is unreachable (oldest dropped)
    timeout: float = 10.0  # seconds per HTTP request
    per_token: bool = False  # attach the compact per-token trace to every record
    max_request_bytes: int = 4 * 1024 * 1024  # JSON bytes per request (the service takes 8 MiB)
    max_rejected: int = 1000  # refused records kept in Monitor.rejected (oldest dropped)
    retry_initial: float = 0.5  # seconds before the first retry of an unreachable target
    retry_max: float = 60.0  # longest wait between retries (the wait doubles up to it)
    close_timeout: float = 10.0  # seconds close() and the exit flush keep retrying

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not self.flush_interval > 0:
            raise ValueError(f"flush_interval must be positive, got {self.flush_interval}")
        if self.max_buffer < self.batch_size:
            raise ValueError(f"max_buffer must be >= batch_size, got {self.max_buffer}")
        if self.max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be >= 1024, got {self.max_request_bytes}")
        if self.max_rejected < 0:
            raise ValueError(f"max_rejected must be >= 0, got {self.max_rejected}")
        if not 0 < self.retry_initial <= self.retry_max:
            raise ValueError(
                f"retry_initial must be in (0, retry_max], got {self.retry_initial} and "
                f"{self.retry_max}"
            )
        if not self.close_timeout >= 0:
            raise ValueError(f"close_timeout must be >= 0, got {self.close_timeout}")


@dataclass(frozen=True)
class Rejected:
    """A record the target refused for good, and why (the target's answer, shortened)."""

    record: dict[str, Any]
    reason: str


class Refused(Exception):
    """The target will never take this batch as it is (HTTP 400/413/422, an invalid record)."""


class Unavailable(RuntimeError):
    """The target could not take the batch now (unreachable, 5xx); it is kept."""


class Unauthorized(Unavailable):
    """The service refused the token (401/403): kept, but not retried by close()."""


def check_record(record: Mapping[str, Any]) -> str:
    """Check one record against the service's schema; returns its JSON, raises ValueError
    naming the record and the field, or TypeError when it is not a mapping."""
    from pydantic import ValidationError

    from attnkit.monitor.schemas import RecordIn

    if not isinstance(record, Mapping):
        raise TypeError(f"record must be a mapping, got {type(record).__name__}")
    name = repr(record.get("request_id"))[:80]
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"record {name} is invalid: {key}: must be finite, got {value}")
    try:
        text = json.dumps(dict(record), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"record {name} cannot be sent as JSON: {error}") from None
    try:
        RecordIn.model_validate_json(text)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p)[:40] for p in e['loc']) or 'record'}: {e['msg']}"
            for e in error.errors()[:5]
        )
        raise ValueError(f"record {name} is invalid: {problems}") from None
    return text


_LIVE: weakref.WeakSet = weakref.WeakSet()  # monitors to flush at exit and on SIGTERM
_HOOKS = {"installed": False, "previous": None}
_HOOKS_LOCK = threading.Lock()


def _flush_all_at_exit() -> None:
    for monitor in list(_LIVE):
        monitor._at_exit()


def _on_sigterm(signum, frame) -> None:
    _flush_all_at_exit()
    previous = _HOOKS["previous"]
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # die of SIGTERM, as without us
    os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_hooks() -> None:
    with _HOOKS_LOCK:
        if _HOOKS["installed"]:
            return
        _HOOKS["installed"] = True
        atexit.register(_flush_all_at_exit)
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGTERM)
            if previous in (signal.SIG_DFL, None) or callable(previous):
                _HOOKS["previous"] = previous if callable(previous) else None
                signal.signal(signal.SIGTERM, _on_sigterm)


class Monitor:
    """Logs generations to the monitoring service or a database, in background batches.

    Args:
        target: the service's base URL (``http://host:port``), a database URL
            (``sqlite:///file.db``, ``postgresql://...``) or a :class:`Store`.
        token: bearer token for the service (ASCII, as an HTTP header carries it).
        tags: tags added to every record (``log``'s tags win).
        detector: a fitted lookback lens for ``detector_score``
            (:func:`attnkit.llm.detection.recommended_detector`, fitted on labelled answers of
            this model, or a :class:`~attnkit.llm.lookback_lens.LookbackLens`).
        tokenizer: decodes token texts of per-token traces.
        config: batching, summary and retry options; its fields may also be given directly.

    Use as a context manager, or call :meth:`close`, so the last batch is written; records still
    queued at interpreter exit or on SIGTERM are written then.

    Attributes:
        rejected: the records the target refused for good (:class:`Rejected`), newest last,
            at most ``config.max_rejected``; ``rejected_total`` counts all of them.
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
        if detector is not None:
            from attnkit.llm.detection import check_trace_detector

            check_trace_detector(detector)
        self.config = MonitorConfig(**options) if config is None else config
        self.tags = dict(tags or {})
        self.detector, self.tokenizer = detector, tokenizer
        self._send = self._sender(target, token)
        self._buffer: collections.deque = collections.deque()  # (sequence number, record, size)
        self._sequence = itertools.count()
        self.rejected: collections.deque[Rejected] = collections.deque(
            maxlen=self.config.max_rejected
        )
        self.rejected_total = 0
        # re-entrant: the SIGTERM flush runs in the main thread, which may hold either
        self._lock = threading.RLock()  # guards the buffer and the dead letters
        self._send_lock = threading.RLock()  # one write at a time, in order
        self._wake = threading.Event()
        self._closed = self._stopping = False
        self._outage = False  # warned about the current outage
        self._handles: list = []  # hooks registered by attach(), removed by close()
        self._thread = threading.Thread(target=self._run, name="attnkit-monitor", daemon=True)
        self._thread.start()
        _LIVE.add(self)
        _install_exit_hooks()

    def _sender(self, target: str | Store, token: str | None) -> Callable[[list], None]:
        if isinstance(target, Store):
            return self._store_sender(target)
        if not isinstance(target, str):
            raise TypeError(f"target must be a URL or a Store, got {type(target).__name__}")
        if target.startswith(("http://", "https://")):
            import httpx

            from attnkit.monitor.settings import TOKEN_CHARS

            if token is not None and not TOKEN_CHARS.fullmatch(token):
                raise ValueError(
                    "token must be ASCII letters, digits and -._~+/ (RFC 6750), as an HTTP "
                    "header carries it; got a token with other characters"
                )
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            self._http = httpx.Client(base_url=target, headers=headers, timeout=self.config.timeout)

            def send(texts: list[str]) -> None:
                body = ('{"records":[' + ",".join(texts) + "]}").encode("utf-8")
                try:
                    response = self._http.post(
                        "/v1/records/batch", content=body,
                        headers={"Content-Type": "application/json"},
                    )  # fmt: skip
                except httpx.HTTPError as error:
                    raise Unavailable(f"the monitor service cannot be reached: {error}") from error
                if response.status_code in REFUSED:  # sending it again cannot help
                    raise Refused(f"HTTP {response.status_code}: {response.text[:500]}")
                if response.status_code >= 400:
                    kind = Unauthorized if response.status_code in (401, 403) else Unavailable
                    raise kind(
                        f"the monitor service answered {response.status_code}: "
                        f"{response.text[:500]}"
                    )

            return send
        store = Store(target)
        store.upgrade()
        self._store = store
        return self._store_sender(store)

    @staticmethod
    def _store_sender(store: Store) -> Callable[[list], None]:
        def send(texts: list[str]) -> None:
            records = [json.loads(text) for text in texts]
            from sqlalchemy.exc import DataError, IntegrityError

            try:
                rows = [store.prepare(record) for record in records]
            except (TypeError, ValueError) as error:
                raise Refused(str(error)[:500]) from error
            try:
                store.write(rows)
            except (DataError, IntegrityError) as error:  # the database refuses these values
                raise Refused(str(error.orig)[:500]) from error

        return send

    def log(
        self, trace, tags: Mapping[str, str] | None = None, request_id: str | None = None
    ) -> str:
        """Queue the summary of one generation; returns its request id.

        Raises ValueError for a record the service would refuse (nothing is queued then)."""
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
        """Queue a record that is already summarized (see :func:`summarize`).

        Raises ValueError naming the field when the record is invalid (a NaN or out-of-range
        signal, a tag too long, ...); the queue is not touched then."""
        if self._closed:
            raise ValueError("the monitor is closed")
        text = check_record(record)
        if len(text) + 16 > self.config.max_request_bytes:
            raise ValueError(
                f"record {record.get('request_id')!r:.80} is {len(text)} bytes as JSON, over "
                f"max_request_bytes ({self.config.max_request_bytes})"
            )
        with self._lock:
            self._buffer.append((next(self._sequence), text))
            dropped = len(self._buffer) - self.config.max_buffer
            for _ in range(max(dropped, 0)):
                self._buffer.popleft()
            full = len(self._buffer) >= self.config.batch_size
        if dropped > 0:
            log.warning("monitor buffer full: dropped the %d oldest records", dropped)
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Records queued and not yet written."""
        with self._lock:
            return len(self._buffer)

    @property
    def unsent(self) -> list[dict[str, Any]]:
        """The records queued and not yet written (copies)."""
        with self._lock:
            return [json.loads(text) for _, text in self._buffer]

    def _next_batch(self) -> list[tuple[int, str]]:
        with self._lock:
            batch, size = [], 16
            for item in itertools.islice(self._buffer, self.config.batch_size):
                size += len(item[1]) + 1
                if batch and size > self.config.max_request_bytes:
                    break
                batch.append(item)
            return batch

    def _deliver(self, texts: list[str]) -> None:
        """Send ``texts``; halves a refused batch until the refused records are alone."""
        try:
            self._send(texts)
        except Refused as refusal:
            if len(texts) > 1:
                middle = len(texts) // 2
                self._deliver(texts[:middle])
                self._deliver(texts[middle:])
                return
            with self._lock:
                self.rejected.append(Rejected(json.loads(texts[0]), str(refusal)))
                self.rejected_total += 1
            log.error("monitor target refused record %.80r: %s",
                      json.loads(texts[0]).get("request_id"), refusal)  # fmt: skip

    def flush(self) -> None:
        """Write every queued record now; raises if the target cannot be reached (the records
        stay queued). Records the target refuses go to :attr:`rejected`."""
        with self._send_lock:
            while True:
                batch = self._next_batch()
                if not batch:
                    return
                self._deliver([text for _, text in batch])
                last = batch[-1][0]
                with self._lock:  # drop what was sent (older records may have been dropped)
                    while self._buffer and self._buffer[0][0] <= last:
                        self._buffer.popleft()

    def _run(self) -> None:
        delay, retry_at = 0.0, 0.0
        while not self._stopping:
            wait = self.config.flush_interval if not delay else retry_at - time.monotonic()
            self._wake.wait(max(wait, 0.0))
            self._wake.clear()
            if self._stopping:
                return
            if delay and time.monotonic() < retry_at:
                continue  # woken by a full batch while backing off: keep waiting
            try:
                self.flush()
            except Exception as error:  # kept for the next try; the target may be restarting
                if not self._outage:
                    log.warning(
                        "monitor could not write %d records (%s); they are kept and retried "
                        "with backoff (this is logged once per outage)", self.pending, error,
                    )  # fmt: skip
                    self._outage = True
                delay = min(max(2 * delay, self.config.retry_initial), self.config.retry_max)
                retry_at = time.monotonic() + delay
                continue
            if self._outage:
                log.warning("monitor target reachable again: queued records written")
                self._outage = False
            delay = 0.0

    def _flush_with_retries(self, timeout: float) -> None:
        """Flush, retrying an unreachable target with backoff for up to ``timeout`` seconds."""
        deadline, delay = time.monotonic() + timeout, self.config.retry_initial
        while True:
            try:
                self.flush()
                return
            except Exception as error:
                if isinstance(error, Unauthorized) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, self.config.retry_max)

    def attach(self):
        """Log every :func:`attnkit.llm.generate` call until :meth:`close`; returns the
        hook's handle (``handle.remove()`` detaches earlier). A generation whose record is
        invalid is logged as an error and kept in :attr:`rejected`; it never stops the model."""
        from attnkit.llm.generation import add_trace_hook

        def hook(trace) -> None:
            try:
                self.log(trace)
            except ValueError as error:
                with self._lock:
                    self.rejected.append(Rejected({}, str(error)))
                    self.rejected_total += 1
                log.error("monitor did not queue a generation: %s", error)

        handle = add_trace_hook(hook)
        self._handles.append(handle)
        return handle

    def close(self) -> None:
        """Write what is queued (retrying an unreachable target for ``config.close_timeout``
        seconds) and stop the background thread. Raises RuntimeError when records could not be
        written; they stay in :attr:`unsent`."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            handle.remove()
        self._stopping = True
        self._wake.set()
        self._thread.join()
        try:
            self._flush_with_retries(self.config.close_timeout)
        except Exception as error:
            raise RuntimeError(
                f"monitor could not write {self.pending} records ({error}); they are kept in "
                "monitor.unsent"
            ) from error
        finally:
            _LIVE.discard(self)
            if hasattr(self, "_http"):
                self._http.close()
            if hasattr(self, "_store"):
                self._store.close()

    def _at_exit(self) -> None:
        """Interpreter exit or SIGTERM: write what is queued; save what cannot be written."""
        if self._closed:
            return
        try:
            self.close()
        except Exception as error:
            records = self.unsent
            fd, path = tempfile.mkstemp(prefix="attnkit-monitor-unsent-", suffix=".jsonl")
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.writelines(json.dumps(record) + "\n" for record in records)
            log.error(
                "monitor could not write %d records at exit (%s); saved to %s (one record per "
                "line: Monitor.log_record each to send them again)", len(records), error, path,
            )  # fmt: skip

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
