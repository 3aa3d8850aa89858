"""The monitor's tables (SQLAlchemy 2 declarative models); alembic migrations create them.

``records`` holds one row per logged generation, ``rollups`` the sums of its signals per minute
and per hour of each (model, version), ``groups`` the (model, version) pairs seen and ``alerts``
the alerts that fired.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from attnkit._moved import moved_name

__all__ = ["GROUPS", "LENGTHS", "ROLLUP_S", "ROLLUP_WIDTHS",
           "AlertRow", "Base", "GroupRow", "RecordRow", "RollupRow"]  # fmt: skip

LENGTHS = ("prompt_tokens", "new_tokens")
ROLLUP_S = 60  # width of the finest rollup bucket in seconds; series buckets are multiples of it
ROLLUP_WIDTHS = (ROLLUP_S, 3600)  # every record adds to one minute and one hour rollup
GROUPS = ("model", "version")  # the tags a series can be split by (indexed columns)
# the signals a record holds, and the closed range of every stored signal (checked before
# anything is stored), come from the vocabulary (attnkit.llm.signals); the signal columns below
# are declared (the schema is migrated, append-only) and a test keeps them equal to it


class Base(DeclarativeBase):
    """The monitor's metadata."""


class RecordRow(Base):
    """One logged generation: tags and per-request signal summaries."""

    __tablename__ = "records"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), unique=True)
    time: Mapped[float] = mapped_column(Float)  # seconds since the epoch (UTC)
    model: Mapped[str] = mapped_column(String(200), default="")
    version: Mapped[str] = mapped_column(String(200), default="")
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    lookback_ratio: Mapped[float] = mapped_column(Float)
    entropy: Mapped[float] = mapped_column(Float)
    sink: Mapped[float] = mapped_column(Float)
    max_weight: Mapped[float] = mapped_column(Float)
    detector_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    new_tokens: Mapped[int] = mapped_column(Integer)
    # the compact per-token trace (client.token_trace), or NULL
    trace: Mapped[dict | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    __table_args__ = (
        Index("ix_records_time", "time"),
        Index("ix_records_model_time", "model", "time"),
        Index("ix_records_version_time", "version", "time"),
        Index("ix_records_model_version_time", "model", "version", "time"),
    )


class RollupRow(Base):
    """Sums of the signals of every record in one minute (or hour) of one (model, version)."""

    __tablename__ = "rollups"
    width: Mapped[int] = mapped_column(Integer, primary_key=True)  # seconds: 60 or 3600
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # bucket start, epoch s
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(200), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    lookback_ratio: Mapped[float] = mapped_column(Float)
    entropy: Mapped[float] = mapped_column(Float)
    sink: Mapped[float] = mapped_column(Float)
    max_weight: Mapped[float] = mapped_column(Float)
    detector_score: Mapped[float] = mapped_column(Float)
    detector_count: Mapped[int] = mapped_column(BigInteger)  # records that carry a score
    prompt_tokens: Mapped[float] = mapped_column(Float)
    new_tokens: Mapped[float] = mapped_column(Float)


class GroupRow(Base):
    """A (model, version) pair that has records."""

    __tablename__ = "groups"
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(200), primary_key=True)


class AlertRow(Base):
    """An alert that fired."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(200))
    signal: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: not finite
    message: Mapped[str] = mapped_column(String(2000))
    tags: Mapped[dict] = mapped_column(JSON, default=dict)  # tags of the evaluated window
    fired_at: Mapped[float] = mapped_column(Float, index=True)


def __getattr__(name: str):
    return moved_name(__name__, name)
