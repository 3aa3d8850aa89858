"""Monitoring of LLMs in production through their attention signals.

Drift detection (:mod:`attnkit.monitor.drift`), alert rules (:mod:`attnkit.monitor.alerts`) and
a self-contained HTML drift report (:mod:`attnkit.monitor.report`), plus the store, client and
HTTP service that record generation traces over time.
"""
