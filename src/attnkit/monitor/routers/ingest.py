"""Ingest: ``POST /v1/records`` and ``POST /v1/records/batch``.

Bodies are checked against :mod:`attnkit.monitor.schemas` by the route itself (in a worker
thread past 64 KiB, at most two at once), so that a large body never stalls other requests;
rows go to the app's :class:`~attnkit.monitor.writer.GroupWriter`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from attnkit.monitor.routers.deps import ServicesDep, bearer, errors
from attnkit.monitor.schemas import BatchIn, RecordIn
from attnkit.monitor.store import Store

__all__ = ["router"]

INLINE_BYTES = 64 * 1024  # smaller bodies are checked on the event loop

router = APIRouter(prefix="/v1", dependencies=[Depends(bearer)])


def _parse(model, body: bytes, store: Store) -> list[dict[str, Any]]:
    """Validate a body and prepare its rows (in a worker thread: big bodies take time)."""
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as error:
        raise HTTPException(422, errors(error.errors())) from None
    records = parsed.records if isinstance(parsed, BatchIn) else [parsed]
    try:
        return [store.prepare(record.model_dump()) for record in records]
    except (TypeError, ValueError) as error:
        raise HTTPException(422, str(error)) from error


async def _ingest(model, request: Request, services) -> dict[str, int]:
    body = await request.body()
    if len(body) < INLINE_BYTES:
        rows = _parse(model, body, services.store)
    else:
        async with services.checking:
            rows = await run_in_threadpool(_parse, model, body, services.store)
        del body
    result = await asyncio.wrap_future(services.writer.submit(rows))
    services.metrics["ingested"].inc(result.inserted)
    services.metrics["duplicates"].inc(result.duplicates)
    return {"inserted": result.inserted, "duplicates": result.duplicates}


def _body_of(model) -> dict[str, Any]:  # the OpenAPI request body the route checks itself
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


@router.post(
    "/records", summary="Store one record (idempotent on request_id)",
    openapi_extra=_body_of(RecordIn),
)  # fmt: skip
async def post_record(request: Request, services: ServicesDep) -> dict[str, int]:
    return await _ingest(RecordIn, request, services)


@router.post(
    "/records/batch", summary="Store records in one transaction",
    openapi_extra=_body_of(BatchIn),
)  # fmt: skip
async def post_batch(request: Request, services: ServicesDep) -> dict[str, int]:
    return await _ingest(BatchIn, request, services)
