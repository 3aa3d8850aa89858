"""alembic environment of the monitor's store: runs on the connection ``Store.upgrade`` passes."""

from alembic import context

from attnkit.monitor.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
