"""The monitoring service's routes, one router per concern, which
:func:`attnkit.monitor.server.create_app` composes.

- :mod:`.ingest`: ``POST /v1/records``, ``POST /v1/records/batch``;
- :mod:`.queries`: ``GET /v1/records``, ``/v1/records/{request_id}``, ``/v1/groups``,
  ``/v1/series``, ``/v1/drift``;
- :mod:`.alerts`: ``GET /v1/alerts``, ``POST /v1/alerts/evaluate`` and the background
  evaluation of the alert rules;
- :mod:`.metrics`: ``GET /metrics`` (Prometheus);
- :mod:`.dashboard`: ``GET /`` and ``/static/{name}``.

Routes reach what the app holds (store, settings, writer, metrics, alerting) through the
dependencies of :mod:`.deps`, which read ``app.state``.
"""
