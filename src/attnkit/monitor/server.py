"""The monitoring service (FastAPI): ingest, query, drift, alerts, Prometheus metrics, dashboard.

``create_app(Settings(db=..., tokens=(...)))`` builds the app; ``attnkit serve`` runs it with
uvicorn. Every ``/v1`` route and ``/metrics`` need ``Authorization: Bearer <token>`` when tokens
are set (401 without one, 403 with a wrong one; compared in constant time, never logged).
Bodies over ``max_body_bytes`` get 413, invalid input a 4xx with a short message (never the input
back); bodies are checked in a worker thread, so a large one never stalls other requests. The
service refuses to start on a database whose schema is behind this attnkit's migrations
(``attnkit serve --upgrade`` applies them). The dashboard (``/``) is static; it asks for the token
and reads the API like any client.

The routes live in :mod:`attnkit.monitor.routers`, one router per concern (ingest, queries,
alerts, metrics, dashboard); :func:`create_app` builds the services they share (store, writer,
metrics, alerting, on ``app.state``) and composes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from attnkit.monitor.guard import Guard
from attnkit.monitor.routers import alerts, dashboard, ingest, metrics, queries
from attnkit.monitor.routers.deps import Services, errors
from attnkit.monitor.schemas import BatchIn, RecordIn
from attnkit.monitor.settings import Settings
from attnkit.monitor.store import SchemaError, Store
from attnkit.monitor.writer import GroupWriter

__all__ = ["create_app"]

log = logging.getLogger(__name__)

DISK_FULL = ("database or disk is full", "no space left on device", "disk full")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The monitoring service for ``settings`` (default: :meth:`Settings.from_env`)."""
    from prometheus_client import CollectorRegistry

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
    registry = CollectorRegistry()
    counters = metrics.make_metrics(registry)
    services = Services(
        settings=settings,
        store=store,
        writer=GroupWriter(store),
        registry=registry,
        metrics=counters,
        alerting=alerts.Alerting(settings, store, counters),
        checking=asyncio.Semaphore(2),  # bodies checked at once (each may need ~100x its size)
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        task = asyncio.create_task(services.alerting.loop())
        yield
        task.cancel()
        services.writer.close()
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
    app.state.services = services
    app.state.store = store
    app.state.dashboard, app.state.assets = dashboard.dashboard_html(), dashboard.assets()
    app.add_exception_handler(OperationalError, _unavailable)
    app.add_exception_handler(RequestValidationError, _invalid)
    for router in (ingest.router, queries.router, alerts.router, metrics.router, dashboard.router):
        app.include_router(router)
    app.openapi = _openapi(app)
    app.add_middleware(Guard, settings=settings, metrics=counters)
    return app


async def _unavailable(_request: Request, error: OperationalError) -> JSONResponse:
    log.error("database error: %s", error.orig)
    if any(words in str(error.orig).lower() for words in DISK_FULL):
        return JSONResponse(
            {"detail": "the database's disk is full: nothing was stored"}, status_code=507
        )
    return JSONResponse({"detail": "the database is unavailable"}, status_code=503)


async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": errors(error.errors())}, status_code=422)


def _openapi(app: FastAPI):
    """FastAPI's schema plus the bodies the ingest routes check themselves (in threads)."""
    schemas = {}
    for model in (RecordIn, BatchIn):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            document = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            app.openapi_schema = document
        return app.openapi_schema

    return openapi
