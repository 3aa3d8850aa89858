"""The monitoring service (FastAPI): ingest, query, drift, alerts, Prometheus metrics, dashboard.

``create_app(Settings(db=..., tokens=(...)))`` builds the app; ``attnkit serve`` runs it with
uvicorn. Every ``/v1`` route and ``/metrics`` need ``Authorization: Bearer <token>`` when tokens
are set (401 without one, 403 with a wrong one; compared in constant time, never logged).
Bodies over ``max_body_bytes`` get 413, invalid input a 4xx with a short message (never the input
back); bodies are checked in a worker thread, so a large one never stalls other requests. The
service refuses to start on a database whose schema is behind this attnkit's migrations
(``attnkit serve --upgrade`` applies them). The dashboard (``/``) is static; it asks for the token
and reads the API like any client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from attnkit.monitor.guard import Guard
from attnkit.monitor.schemas import BatchIn, RecordIn
from attnkit.monitor.settings import Settings
from attnkit.monitor.store import SchemaError, Store
from attnkit.monitor.tables import GROUPS, LENGTHS, ROLLUP_S, SIGNALS
from attnkit.monitor.writer import GroupWriter

__all__ = ["create_app"]

log = logging.getLogger(__name__)

WEB = Path(__file__).parent / "web"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
DAY = 86400.0
MAX_ERRORS = 20  # validation errors listed in a 422
DISK_FULL = ("database or disk is full", "no space left on device", "disk full")


def _short(value: object, limit: int = 80) -> object:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    return value


def _errors(errors: list[dict]) -> list[dict[str, Any]]:
    """Where and what, at most :data:`MAX_ERRORS` of them, never the input back (it may be huge,
    or NaN): a bounded answer to any body."""
    return [
        {"loc": [_short(part) for part in e["loc"]], "msg": str(_short(e["msg"], 300))}
        for e in errors[:MAX_ERRORS]
    ]


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _tag_filters(tag: list[str]) -> dict[str, str]:
    filters = {}
    for item in tag:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise HTTPException(422, f"tag filters must be key:value, got {item!r}")
        filters[key] = value
    return filters


def _window(start: float | None, end: float | None, default_days: float) -> tuple[float, float]:
    end = time.time() if end is None else end
    start = end - default_days * DAY if start is None else start
    if not start < end:
        raise HTTPException(422, f"start ({start}) must be before end ({end})")
    return start, end


def _metrics(registry):
    from prometheus_client import Counter, Histogram

    return {
        "ingested": Counter("attnkit_records_ingested", "Records stored", registry=registry),
        "duplicates": Counter(
            "attnkit_records_duplicate", "Records skipped: request id already stored",
            registry=registry,
        ),
        "requests": Counter(
            "attnkit_http_requests", "HTTP requests", ["method", "route", "status"],
            registry=registry,
        ),
        "latency": Histogram(
            "attnkit_http_request_seconds", "HTTP request latency", ["route"], registry=registry
        ),
        "alerts": Counter(
            "attnkit_alerts_fired", "Alerts fired", ["rule", "severity"], registry=registry
        ),
    }  # fmt: skip


Seconds = Annotated[float | None, Query(ge=0, le=1e11, allow_inf_nan=False)]
Name = Annotated[str | None, Query(max_length=200)]
Signal = Literal[SIGNALS + LENGTHS]
Group = Literal[GROUPS]
Method = Literal["psi", "ks", "wasserstein", "jensenshannon"]
Tags = Annotated[list[str], Query(max_length=32, description="key:value filters on tags")]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The monitoring service for ``settings`` (default: :meth:`Settings.from_env`)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    settings = Settings.from_env() if settings is None else settings
    store = Store(settings.db)
    try:
        if settings.upgrade:
            store.upgrade()
        else:
            store.prepare_schema()  # creates an empty database, refuses one that is behind
    except SchemaError:
        store.close()
        raise
    writer = GroupWriter(store)
    registry = CollectorRegistry()
    metrics = _metrics(registry)
    alerting = _Alerting(settings, store, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        task = asyncio.create_task(alerting.loop())
        yield
        task.cancel()
        writer.close()
        store.close()

    app = FastAPI(
        title="attnkit monitor",
        version="1",
        description="Attention signals of LLM generations over time: ingest, query, drift, "
        "alerts. Send 'Authorization: Bearer <token>' to every /v1 route.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; the schema is enough
        redoc_url=None,
    )

    app.state.store = store

    @app.exception_handler(OperationalError)
    async def unavailable(_request: Request, error: OperationalError) -> JSONResponse:
        log.error("database error: %s", error.orig)
        if any(words in str(error.orig).lower() for words in DISK_FULL):
            return JSONResponse(
                {"detail": "the database's disk is full: nothing was stored"}, status_code=507
            )
        return JSONResponse({"detail": "the database is unavailable"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _errors(error.errors())}, status_code=422)

    bearer = HTTPBearer(auto_error=False, description="a token from ATTNKIT_TOKENS")
    api = APIRouter(prefix="/v1", dependencies=[Depends(bearer)])
    checking = asyncio.Semaphore(2)  # bodies checked at once (each may need ~100x its size)

    def parse(model, body: bytes) -> list[dict[str, Any]]:
        """Validate a body and prepare its rows (in a worker thread: big bodies take time)."""
        try:
            parsed = model.model_validate_json(body)
        except ValidationError as error:
            raise HTTPException(422, _errors(error.errors())) from None
        records = parsed.records if isinstance(parsed, BatchIn) else [parsed]
        try:
            return [store.prepare(record.model_dump()) for record in records]
        except (TypeError, ValueError) as error:
            raise HTTPException(422, str(error)) from error

    async def ingest(model, request: Request) -> dict[str, int]:
        body = await request.body()
        if len(body) < 64 * 1024:
            rows = parse(model, body)
        else:
            async with checking:
                rows = await run_in_threadpool(parse, model, body)
            del body
        result = await asyncio.wrap_future(writer.submit(rows))
        metrics["ingested"].inc(result.inserted)
        metrics["duplicates"].inc(result.duplicates)
        return {"inserted": result.inserted, "duplicates": result.duplicates}

    def body_of(model) -> dict[str, Any]:  # the OpenAPI request body the route checks itself
        schema = {"$ref": f"#/components/schemas/{model.__name__}"}
        content = {"application/json": {"schema": schema}}
        return {"requestBody": {"required": True, "content": content}}

    @api.post(
        "/records", summary="Store one record (idempotent on request_id)",
        openapi_extra=body_of(RecordIn),
    )  # fmt: skip
    async def post_record(request: Request) -> dict[str, int]:
        return await ingest(RecordIn, request)

    @api.post(
        "/records/batch", summary="Store records in one transaction",
        openapi_extra=body_of(BatchIn),
    )  # fmt: skip
    async def post_batch(request: Request) -> dict[str, int]:
        return await ingest(BatchIn, request)

    @api.get("/records", summary="Records newest first, without per-token traces")
    def get_records(
        start: Seconds = None,
        end: Seconds = None,
        model: Name = None,
        version: Name = None,
        tag: Tags = [],  # noqa: B006 (FastAPI copies defaults)
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9][0-9.e+-]{0,30}_[0-9]{1,18}$")] = None,
    ) -> dict[str, Any]:
        if start is not None and end is not None and not start < end:
            raise HTTPException(422, f"start ({start}) must be before end ({end})")
        before = None
        if cursor is not None:  # "<time>_<id>" of the previous page's last record
            at, _, row_id = cursor.partition("_")
            try:
                before = (float(at), int(row_id))
            except ValueError:
                before = None
            if before is None or not math.isfinite(before[0]):
                raise HTTPException(422, "cursor must be one that a previous page returned")
        rows, after = store.records(
            start=start, end=end, model=model, version=version, tags=_tag_filters(tag),
            limit=limit, before=before,
        )  # fmt: skip
        return {
            "records": rows,
            "next_cursor": None if after is None else f"{after[0]!r}_{after[1]}",
        }

    @api.get("/records/{request_id:path}", summary="One record with its per-token trace")
    def get_record(request_id: str) -> dict[str, Any]:
        row = store.get(request_id)
        if row is None:
            raise HTTPException(404, "no record with this request_id")
        return row

    @api.get("/groups", summary="Every (model, version) with records")
    def get_groups() -> list[dict[str, str]]:
        return store.groups()

    @api.get("/series", summary="Mean of a signal per time bucket, optionally per tag")
    def get_series(
        signal: Signal = "lookback_ratio",
        start: Seconds = None,
        end: Seconds = None,
        bucket_s: Annotated[int | None, Query(ge=ROLLUP_S, le=366 * 86400)] = None,
        by: Group | None = None,
        model: Name = None,
        version: Name = None,
    ) -> dict[str, Any]:
        start, end = _window(start, end, 1)
        if bucket_s is None:  # about 200 points; whole hours past 30 minutes (hourly rollups)
            step = 3600 if (end - start) / 200 > 1800 else ROLLUP_S
            bucket_s = max(ROLLUP_S, math.ceil((end - start) / 200 / step) * step)
        bucket_s -= bucket_s % ROLLUP_S
        points = store.series(
            signal, start=start, end=end, bucket_s=bucket_s, by=by, model=model, version=version
        )
        return {"signal": signal, "bucket_s": bucket_s, "by": by, "points": points}

    @api.get("/drift", summary="Drift of every signal: reference window vs current window")
    def get_drift(
        current_days: Annotated[float, Query(gt=0, le=3660)] = 1.0,
        reference_days: Annotated[float, Query(gt=0, le=3660)] = 7.0,
        end: Seconds = None,
        by: Group | None = None,
        method: Method | None = None,
    ) -> dict[str, Any]:
        return _drift(store, settings, current_days, reference_days, end, by, method)

    @api.get("/alerts", summary="Alerts that fired, newest first")
    def get_alerts(
        since: Seconds = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        return {"alerts": store.alerts(since=since, limit=limit), "rules": alerting.rule_names}

    @api.post("/alerts/evaluate", summary="Evaluate the alert rules now")
    async def evaluate_alerts() -> dict[str, Any]:
        fired = await run_in_threadpool(alerting.evaluate)
        return {"fired": fired}

    app.include_router(api)

    @app.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(bearer)])
    def get_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    page = (WEB / "index.html").read_bytes()
    assets = {name: (WEB / name).read_bytes() for name in ASSETS}

    @app.get("/", include_in_schema=False)
    def dashboard() -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, "no such asset")
        return Response(assets[name], media_type=ASSETS[name])

    schemas = {}
    for model in (RecordIn, BatchIn):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema

    def openapi() -> dict[str, Any]:  # FastAPI's schema plus the bodies checked in threads
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            document = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi
    app.add_middleware(Guard, settings=settings, metrics=metrics)
    return app


def _drift(store, settings, current_days, reference_days, end, by, method) -> dict[str, Any]:
    from attnkit.monitor.drift import drift_report

    end = time.time() if end is None else end
    split = end - current_days * DAY
    truncated = False
    if by is None:
        groups = [None]
    else:  # the groups with records in the current window, busiest first, a bounded number
        active = store.active_groups(by, start=split, end=end, limit=settings.max_drift_groups + 1)
        truncated = len(active) > settings.max_drift_groups
        groups = sorted(active[: settings.max_drift_groups])
    results = []
    for group in groups:
        reference, current = store.windows(
            current_days=current_days, reference_days=reference_days, end=end,
            limit=settings.drift_samples, **({} if group is None else {by: group}),
        )  # fmt: skip
        usable = [s for s in SIGNALS if len(reference[s]) and len(current[s])]
        entry: dict[str, Any] = {"group": group, "drifted": None, "drifted_share": None}
        entry["signals"], entry["skipped"] = {}, [s for s in SIGNALS if s not in usable]
        if usable:
            report = drift_report(
                {s: reference[s] for s in usable}, {s: current[s] for s in usable}, method=method
            )
            entry["drifted"], entry["drifted_share"] = report.drifted, report.drifted_share
            entry["signals"] = {
                name: {k: _finite(v) if isinstance(v, float) else v for k, v in asdict(r).items()}
                for name, r in report.results.items()
            }
        results.append(entry)
    return {
        "reference": {"start": split - reference_days * DAY, "end": split},
        "current": {"start": split, "end": end},
        "by": by,
        "groups": results,
        "groups_truncated": truncated,  # more groups than max_drift_groups had records
    }


class _Alerting:
    """Evaluates the alert rules of ``settings.rules`` on the store's newest windows."""

    def __init__(self, settings: Settings, store: Store, metrics) -> None:
        self.settings, self.store, self.metrics = settings, store, metrics
        self.alerters = []
        if settings.rules is not None:
            from attnkit.monitor.alerts import Alerter, load_rules

            for rule in load_rules(settings.rules):  # one alerter per rule: its own cool-down
                self.alerters.append((rule, Alerter([rule], webhook_url=settings.webhook_url)))
        self.rule_names = [rule.name for rule, _ in self.alerters]

    def evaluate(self) -> int:
        """Evaluate every rule once; store what fired and return how many did."""
        now, fired = time.time(), []
        for rule, alerter in self.alerters:
            where = {key: rule.tags[key] for key in GROUPS if key in rule.tags}
            others = {k: v for k, v in rule.tags.items() if k not in GROUPS}
            window = {"tags": others, "limit": self.settings.drift_samples, **where}
            current = self.store.values([rule.signal], start=now - rule.window_s, end=now, **window)
            reference = None
            if rule.kind == "drift":
                reference = self.store.values(
                    [rule.signal], start=now - 2 * rule.window_s, end=now - rule.window_s, **window
                )
                if not len(reference[rule.signal]):
                    continue
            if not len(current[rule.signal]):
                continue
            fired += alerter.evaluate(current, reference, tags=rule.tags)
        for alert in fired:
            self.metrics["alerts"].labels(alert.rule, alert.severity).inc()
        self.store.add_alerts(alert.payload() for alert in fired)
        return len(fired)

    async def loop(self) -> None:
        """Evaluate every ``alert_interval_s``; apply retention once a day."""
        last_retention = 0.0
        while True:
            await asyncio.sleep(self.settings.alert_interval_s)
            try:
                if self.alerters:
                    await run_in_threadpool(self.evaluate)
                days = self.settings.retention_days
                if days is not None and time.time() - last_retention > DAY:
                    await run_in_threadpool(self.store.delete_older_than, days)
                    last_retention = time.time()
            except Exception:  # a failing round must not stop the next ones
                log.exception("alert evaluation failed")
