"""Alerts: ``GET /v1/alerts``, ``POST /v1/alerts/evaluate``, and :class:`Alerting`, which
evaluates the alert rules of ``settings.rules`` on the store's newest windows (in the background
every ``alert_interval_s``, and on request)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from attnkit.monitor.routers.deps import DAY, Seconds, ServicesDep, bearer
from attnkit.monitor.settings import Settings
from attnkit.monitor.store import Store
from attnkit.monitor.tables import GROUPS

__all__ = ["Alerting", "router"]

log = logging.getLogger("attnkit.monitor.server")

router = APIRouter(prefix="/v1", dependencies=[Depends(bearer)])


@router.get("/alerts", summary="Alerts that fired, newest first")
def get_alerts(
    services: ServicesDep,
    since: Seconds = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    return {
        "alerts": services.store.alerts(since=since, limit=limit),
        "rules": services.alerting.rule_names,
    }


@router.post("/alerts/evaluate", summary="Evaluate the alert rules now")
async def evaluate_alerts(services: ServicesDep) -> dict[str, Any]:
    fired = await run_in_threadpool(services.alerting.evaluate)
    return {"fired": fired}


class Alerting:
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
