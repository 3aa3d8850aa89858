"""Queries: ``GET /v1/records`` (pages), ``/v1/records/{request_id}``, ``/v1/groups``,
``/v1/series`` and ``/v1/drift``."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from attnkit.llm.signals import RECORD_SIGNALS
from attnkit.monitor.routers.deps import (
    DAY,
    Group,
    Method,
    Name,
    Seconds,
    ServicesDep,
    Signal,
    StoreDep,
    Tags,
    bearer,
    finite,
    tag_filters,
    window,
)
from attnkit.monitor.tables import ROLLUP_S

__all__ = ["drift", "router"]

router = APIRouter(prefix="/v1", dependencies=[Depends(bearer)])


@router.get("/records", summary="Records newest first, without per-token traces")
def get_records(
    store: StoreDep,
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
        start=start, end=end, model=model, version=version, tags=tag_filters(tag),
        limit=limit, before=before,
    )  # fmt: skip
    return {
        "records": rows,
        "next_cursor": None if after is None else f"{after[0]!r}_{after[1]}",
    }


@router.get("/records/{request_id:path}", summary="One record with its per-token trace")
def get_record(request_id: str, store: StoreDep) -> dict[str, Any]:
    row = store.get(request_id)
    if row is None:
        raise HTTPException(404, "no record with this request_id")
    return row


@router.get("/groups", summary="Every (model, version) with records")
def get_groups(store: StoreDep) -> list[dict[str, str]]:
    return store.groups()


@router.get("/series", summary="Mean of a signal per time bucket, optionally per tag")
def get_series(
    store: StoreDep,
    signal: Signal = "lookback_ratio",
    start: Seconds = None,
    end: Seconds = None,
    bucket_s: Annotated[int | None, Query(ge=ROLLUP_S, le=366 * 86400)] = None,
    by: Group | None = None,
    model: Name = None,
    version: Name = None,
) -> dict[str, Any]:
    start, end = window(start, end, 1)
    if bucket_s is None:  # about 200 points; whole hours past 30 minutes (hourly rollups)
        step = 3600 if (end - start) / 200 > 1800 else ROLLUP_S
        bucket_s = max(ROLLUP_S, math.ceil((end - start) / 200 / step) * step)
    bucket_s -= bucket_s % ROLLUP_S
    points = store.series(
        signal, start=start, end=end, bucket_s=bucket_s, by=by, model=model, version=version
    )
    return {"signal": signal, "bucket_s": bucket_s, "by": by, "points": points}


@router.get("/drift", summary="Drift of every signal: reference window vs current window")
def get_drift(
    services: ServicesDep,
    current_days: Annotated[float, Query(gt=0, le=3660)] = 1.0,
    reference_days: Annotated[float, Query(gt=0, le=3660)] = 7.0,
    end: Seconds = None,
    by: Group | None = None,
    method: Method = None,
) -> dict[str, Any]:
    return drift(services.store, services.settings, current_days, reference_days, end, by, method)


def drift(store, settings, current_days, reference_days, end, by, method) -> dict[str, Any]:
    """The body of ``GET /v1/drift``: a drift report per group of the current window."""
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
        usable = [s for s in RECORD_SIGNALS if len(reference[s]) and len(current[s])]
        entry: dict[str, Any] = {"group": group, "drifted": None, "drifted_share": None}
        entry["signals"], entry["skipped"] = {}, [s for s in RECORD_SIGNALS if s not in usable]
        if usable:
            report = drift_report(
                {s: reference[s] for s in usable}, {s: current[s] for s in usable}, method=method
            )
            entry["drifted"], entry["drifted_share"] = report.drifted, report.drifted_share
            entry["signals"] = {
                name: {k: finite(v) if isinstance(v, float) else v for k, v in asdict(r).items()}
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
