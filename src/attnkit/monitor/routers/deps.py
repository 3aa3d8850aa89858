"""What the routers share: the app's services (on ``app.state``, reached through ``Depends``),
the bearer scheme, query parameter types and the bounded error answers."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPBearer
from pydantic import AfterValidator

from attnkit.llm.signals import RECORD_SIGNALS
from attnkit.monitor.drift import STAT_TESTS
from attnkit.monitor.settings import Settings
from attnkit.monitor.store import Store
from attnkit.monitor.tables import GROUPS, LENGTHS
from attnkit.monitor.writer import GroupWriter

__all__ = ["Services", "bearer", "get_services"]

DAY = 86400.0
MAX_ERRORS = 20  # validation errors listed in a 422


@dataclass(frozen=True)
class Services:
    """What one app holds, built by ``create_app`` and kept on ``app.state.services``."""

    settings: Settings
    store: Store
    writer: GroupWriter  # batches the ingest routes' writes, one transaction per group
    registry: Any  # the app's own prometheus_client.CollectorRegistry
    metrics: dict[str, Any]  # its counters and histograms (server._metrics)
    alerting: Any  # routers.alerts.Alerting: the rules and their background evaluation
    checking: asyncio.Semaphore  # large bodies checked at once (each may need ~100x its size)


# async: FastAPI runs a plain function dependency in a worker thread, on every request
async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_store(request: Request) -> Store:
    return request.app.state.services.store


ServicesDep = Annotated[Services, Depends(get_services)]
StoreDep = Annotated[Store, Depends(get_store)]

# the scheme, for the OpenAPI document; the Guard middleware checks the token itself
bearer = HTTPBearer(auto_error=False, description="a token from ATTNKIT_TOKENS")

Seconds = Annotated[float | None, Query(ge=0, le=1e11, allow_inf_nan=False)]
Name = Annotated[str | None, Query(max_length=200)]
Signal = Literal[RECORD_SIGNALS + LENGTHS]
Group = Literal[GROUPS]


def _stat_test(name: str | None) -> str | None:
    """A drift test's name, checked against the registry when the request comes (a test
    registered after the app was built is accepted too)."""
    if name is not None and name not in STAT_TESTS:
        raise ValueError(f"method must be one of {sorted(STAT_TESTS)}")
    return name


Method = Annotated[
    str | None,
    Query(max_length=100, description="a drift test of attnkit.monitor.drift.STAT_TESTS"),
    AfterValidator(_stat_test),
]
Tags = Annotated[list[str], Query(max_length=32, description="key:value filters on tags")]


def _short(value: object, limit: int = 80) -> object:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    return value


def errors(found: list[dict]) -> list[dict[str, Any]]:
    """Where and what, at most :data:`MAX_ERRORS` of them, never the input back (it may be huge,
    or NaN): a bounded answer to any body."""
    return [
        {"loc": [_short(part) for part in e["loc"]], "msg": str(_short(e["msg"], 300))}
        for e in found[:MAX_ERRORS]
    ]


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def tag_filters(tag: list[str]) -> dict[str, str]:
    filters = {}
    for item in tag:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise HTTPException(422, f"tag filters must be key:value, got {item!r}")
        filters[key] = value
    return filters


def window(start: float | None, end: float | None, default_days: float) -> tuple[float, float]:
    end = time.time() if end is None else end
    start = end - default_days * DAY if start is None else start
    if not start < end:
        raise HTTPException(422, f"start ({start}) must be before end ({end})")
    return start, end
