"""Alembic environment: the metadata of every area's models on the one shared `Base`."""

from __future__ import annotations

import importlib
import importlib.util

from alembic import context
from sqlalchemy import text

from automations.store.db import make_engine
from automations.store.models import Base

# Other areas put their tables on the same Base; import them (when present) so autogenerate
# sees the whole schema.
for _module in ("notifier.models", "notifier.store"):
    if importlib.util.find_spec(_module) is not None:
        importlib.import_module(_module)

target_metadata = Base.metadata
# Any fixed number: PostgreSQL advisory lock that serialises concurrent migrations.
_MIGRATION_LOCK = 72_410_531


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    return url or context.config.get_main_option("sqlalchemy.url") or ""


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Several services may start at once and each migrate: one at a time.
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
                connection.commit()
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
