"""Rollups per minute and per hour (a ``width`` column in the key) and the groups table.

Revision ID: 0003
Revises: 0002

Rollups without ``width`` are rebuilt from the records (minute and hour sums, exactly what
inserting them now would give); ``groups`` is filled with every (model, version) that has
records. Either step is skipped where the table already has its new form (see 0002).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SIGNALS = ("lookback_ratio", "entropy", "sink", "max_weight")
WIDTHS = (60, 3600)


def _rebuild_rollups(bind) -> None:
    op.drop_table("rollups")
    op.create_table(
        "rollups",
        sa.Column("width", sa.Integer(), primary_key=True),
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
    names = ("width", "bucket", "model", "version", "count", *SIGNALS, "detector_score",
             "detector_count", "prompt_tokens", "new_tokens")  # fmt: skip
    columns = ", ".join(names)
    sums = ", ".join(f"SUM({name})" for name in SIGNALS)
    for width in WIDTHS:  # floor(time / width) * width; times are >= 0
        if bind.dialect.name == "sqlite":
            bucket = f"CAST(time / {width} AS INTEGER) * {width}"
        else:
            bucket = f"CAST(FLOOR(time / {width}) AS BIGINT) * {width}"
        op.execute(
            f"INSERT INTO rollups ({columns}) SELECT {width}, {bucket}, model, version, COUNT(*), "
            f"{sums}, COALESCE(SUM(detector_score), 0), COUNT(detector_score), "
            f"SUM(prompt_tokens), SUM(new_tokens) FROM records GROUP BY {bucket}, model, version"
        )


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if "width" not in {c["name"] for c in inspector.get_columns("rollups")}:
        _rebuild_rollups(bind)
    if "groups" not in inspector.get_table_names():
        op.create_table(
            "groups",
            sa.Column("model", sa.String(200), primary_key=True),
            sa.Column("version", sa.String(200), primary_key=True),
        )
        op.execute(
            "INSERT INTO groups (model, version) SELECT DISTINCT model, version FROM records"
        )


def downgrade() -> None:
    op.drop_table("groups")
    op.execute("DELETE FROM rollups WHERE width <> 60")
    with op.batch_alter_table("rollups") as batch:
        batch.drop_column("width")
