"""Settings of the monitoring service, from arguments or the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings"]

TOKEN_CHARS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token: what a header can carry


@dataclass(frozen=True)
class Settings:
    """What ``create_app`` needs. Tokens never appear in ``repr`` (nor in any log)."""

    db: str = "sqlite:///attnkit.db"  # database URL (SQLite file or PostgreSQL)
    tokens: tuple[str, ...] = field(default=(), repr=False)  # bearer tokens; () = no auth
    rules: Path | None = None  # TOML file of alert rules (attnkit.monitor.alerts)
    webhook_url: str | None = field(default=None, repr=False)  # where fired alerts are POSTed
    max_body_bytes: int = 8 * 1024 * 1024  # larger request bodies get 413
    alert_interval_s: float = 60.0  # seconds between evaluations of the alert rules
    retention_days: float | None = None  # delete older records once a day; None keeps all
    # newest records per window that a drift test reads: with 2000, same-distribution windows
    # give a normalized Wasserstein of about 0.04 (threshold 0.1; see drift.py's table), and a
    # drift request reads in tens of milliseconds even with millions of records stored
    drift_samples: int = 2000
    # Host header values accepted besides the loopback names ("*" accepts any: only behind a
    # proxy that checks Host itself); stops DNS rebinding of a loopback service
    allowed_hosts: tuple[str, ...] = ()
    body_timeout_s: float = 30.0  # a body not received whole within this gets 408
    max_drift_groups: int = 100  # drift?by=...: the groups with the most current records, at most
    upgrade: bool = False  # apply pending migrations at start; else refuse a schema that is behind

    def __post_init__(self) -> None:
        if isinstance(self.tokens, str):
            raise TypeError("tokens must be a tuple of strings, got one string")
        if any(not token or token.strip() != token for token in self.tokens):
            raise ValueError("tokens must be non-empty strings without surrounding spaces")
        if any(not TOKEN_CHARS.fullmatch(token) for token in self.tokens):
            raise ValueError(
                "tokens must be ASCII letters, digits and -._~+/ (RFC 6750), so an HTTP header "
                "can carry them; got a token with other characters"
            )
        if isinstance(self.allowed_hosts, str):
            raise TypeError("allowed_hosts must be a tuple of strings, got one string")
        if not self.body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be positive, got {self.body_timeout_s}")
        if self.max_drift_groups < 1:
            raise ValueError(f"max_drift_groups must be >= 1, got {self.max_drift_groups}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if not self.alert_interval_s > 0:
            raise ValueError(f"alert_interval_s must be positive, got {self.alert_interval_s}")
        if self.retention_days is not None and not self.retention_days > 0:
            raise ValueError(f"retention_days must be positive, got {self.retention_days}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Settings from ``ATTNKIT_DB``, ``ATTNKIT_TOKENS`` (comma-separated),
        ``ATTNKIT_RULES``, ``ATTNKIT_WEBHOOK_URL``, ``ATTNKIT_RETENTION_DAYS`` and
        ``ATTNKIT_ALLOWED_HOSTS`` (comma-separated); keyword arguments that are not None win.
        A value that is not a number where one is needed raises ValueError naming the variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if "ATTNKIT_DB" in environ:
            values["db"] = environ["ATTNKIT_DB"]
        tokens = [t.strip() for t in environ.get("ATTNKIT_TOKENS", "").split(",") if t.strip()]
        if tokens:
            values["tokens"] = tuple(tokens)
        if environ.get("ATTNKIT_RULES"):
            values["rules"] = Path(environ["ATTNKIT_RULES"])
        if environ.get("ATTNKIT_WEBHOOK_URL"):
            values["webhook_url"] = environ["ATTNKIT_WEBHOOK_URL"]
        if environ.get("ATTNKIT_RETENTION_DAYS"):
            try:
                values["retention_days"] = float(environ["ATTNKIT_RETENTION_DAYS"])
            except ValueError:
                raise ValueError(
                    "ATTNKIT_RETENTION_DAYS must be a number of days, got "
                    f"{environ['ATTNKIT_RETENTION_DAYS']!r}"
                ) from None
        hosts = [h.strip() for h in environ.get("ATTNKIT_ALLOWED_HOSTS", "").split(",")]
        if any(hosts):
            values["allowed_hosts"] = tuple(h for h in hosts if h)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
