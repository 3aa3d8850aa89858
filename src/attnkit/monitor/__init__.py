"""Monitoring of LLMs in production through their attention signals.

Drift detection (:mod:`attnkit.monitor.drift`), alert rules (:mod:`attnkit.monitor.alerts`) and
a self-contained HTML drift report (:mod:`attnkit.monitor.report`), plus the store
(:mod:`~attnkit.monitor.store`, SQLite or PostgreSQL), the Python client
(:mod:`~attnkit.monitor.client`) and the HTTP service (:mod:`~attnkit.monitor.server`, with its
dashboard) that record generation traces over time.

The names below are imported on first use, so ``import attnkit.monitor`` loads neither
SQLAlchemy nor FastAPI.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "Monitor": "client",
    "MonitorConfig": "client",
    "Rejected": "client",
    "summarize": "client",
    "token_trace": "client",
    "Store": "store",
    "InsertResult": "store",
    "SchemaError": "store",
    "Settings": "settings",
    "create_app": "server",
    "DriftResult": "drift",
    "DriftReport": "drift",
    "drift_test": "drift",
    "drift_report": "drift",
    "Rule": "alerts",
    "Alert": "alerts",
    "Alerter": "alerts",
    "load_rules": "alerts",
    "render_drift_report": "report",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'attnkit.monitor' has no attribute {name!r}")
    return getattr(importlib.import_module(f"attnkit.monitor.{_HOMES[name]}"), name)
