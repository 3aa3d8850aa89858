"""Alerts carry the tags of the evaluated window; an alert's value may be NULL (not finite).

Revision ID: 0002
Revises: 0001

Databases made between these schemas were stamped 0001 while 0001 was edited in place (before
attnkit kept migrations append-only), so this and the later migrations look at the tables
themselves and change only what is not there yet.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"]: c for c in sa.inspect(op.get_bind()).get_columns("alerts")}
    with op.batch_alter_table("alerts") as batch:
        if "tags" not in columns:
            batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="{}"))
        if not columns["value"]["nullable"]:
            batch.alter_column("value", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("tags")
