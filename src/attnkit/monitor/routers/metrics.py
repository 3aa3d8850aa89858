"""``GET /metrics``: the app's Prometheus metrics (records ingested and skipped as duplicates,
requests and their latency per route, alerts fired)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from attnkit.monitor.routers.deps import ServicesDep, bearer

__all__ = ["make_metrics", "router"]

router = APIRouter()


def make_metrics(registry) -> dict[str, Any]:
    """The app's counters and histograms, in its own ``CollectorRegistry``."""
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


@router.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(bearer)])
def get_metrics(services: ServicesDep) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(services.registry), media_type=CONTENT_TYPE_LATEST)
