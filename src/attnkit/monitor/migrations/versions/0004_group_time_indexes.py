"""Indexes on (model, time) and (version, time) of the records.

Revision ID: 0004
Revises: 0003

Created only where missing (see 0002).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_records_model_time": ["model", "time"],
    "ix_records_version_time": ["version", "time"],
}


def upgrade() -> None:
    present = {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("records")}
    for name, columns in INDEXES.items():
        if name not in present:
            op.create_index(name, "records", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="records")
