"""Records, per-minute rollups and fired alerts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's rowid alias
SIGNALS = ("lookback_ratio", "entropy", "sink", "max_weight")


def upgrade() -> None:
    op.create_table(
        "records",
        sa.Column("id", ID, primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in SIGNALS),
        sa.Column("detector_score", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("new_tokens", sa.Integer(), nullable=False),
        sa.Column("trace", sa.JSON(), nullable=True),
        sa.UniqueConstraint("request_id", name="uq_records_request_id"),
    )
    op.create_index("ix_records_time", "records", ["time"])
    op.create_index("ix_records_model_version_time", "records", ["model", "version", "time"])
    op.create_table(
        "rollups",
        sa.Column("bucket", sa.BigInteger(), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(200), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in SIGNALS),
        sa.Column("detector_score", sa.Float(), nullable=False),
        sa.Column("detector_count", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.Float(), nullable=False),
        sa.Column("new_tokens", sa.Float(), nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("message", sa.String(2000), nullable=False),
        sa.Column("fired_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_alerts_fired_at", "alerts", ["fired_at"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("rollups")
    op.drop_index("ix_records_model_version_time", table_name="records")
    op.drop_index("ix_records_time", table_name="records")
    op.drop_table("records")
