"""SQL plumbing every owner of tables shares: engines, sessions, a UTC timestamp type, and
Alembic migrations run per owner.

Each service that owns tables (the control plane, the notifier) keeps its models and its
migration history in its own package, with its own version table, so neither has to know the
other's schema. A shared engine setup keeps SQLite and PostgreSQL behaving the same for both.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import DateTime, Engine, MetaData, TypeDecorator, create_engine, event, text
from sqlalchemy.engine import Dialect, ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

# Any fixed number: the PostgreSQL advisory lock that serialises concurrent migrations
# (several services may start at once and each migrate its own tables).
_MIGRATION_LOCK = 72_410_531
# Alembic keeps the running migration's context in module globals: two upgrades on two threads
# of one process (two stores set up at once) would trample each other's.
_UPGRADE_IN_PROCESS = threading.Lock()


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC (SQLite keeps no zone) and read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def normalize_url(url: str) -> str:
    """PostgreSQL goes through psycopg 3 whatever driver the URL names (or none)."""
    u = make_url(url)
    if u.get_backend_name() == "postgresql" and u.get_driver_name() != "psycopg":
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    # A failed statement's message would otherwise carry its parameters (a respondent's
    # e-mail address, a key hash) into whatever logs the exception.
    kwargs.setdefault("hide_parameters", True)
    if make_url(url).get_backend_name() == "sqlite":
        _prepare_sqlite_file(url)
        # Other processes (the notifier) write the same file: wait for their locks, not fail.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15},
                               **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    engine = create_engine(url, pool_pre_ping=True, **kwargs)
    event.listen(engine, "handle_error", _drop_server_detail)
    return engine


def _without_detail(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("DETAIL:"))


def _drop_server_detail(context: ExceptionContext) -> None:
    drop_server_detail(context.original_exception, context.sqlalchemy_exception)


def drop_server_detail(*excs: BaseException | None) -> None:
    """PostgreSQL's DETAIL repeats the offending values (`Key (email)=(ada@…) already
    exists`), parameters or not: drop it from the messages that get logged. The driver's
    `diag` keeps it for code that needs it."""
    for exc in excs:
        if exc is not None and exc.args and isinstance(exc.args[0], str) \
                and "DETAIL:" in exc.args[0]:
            exc.args = (_without_detail(exc.args[0]), *exc.args[1:])


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@dataclass(frozen=True)
class Migrations:
    """One owner's Alembic history: its folder (env.py, versions/) and its version table."""

    folder: Path
    version_table: str

    def config(self, url: str) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.folder))
        # `%` is ConfigParser's interpolation character; a password may hold one.
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
        cfg.attributes["version_table"] = self.version_table
        return cfg

    def upgrade(self, url: str) -> None:
        """Bring this owner's tables in the database at `url` to the newest schema."""
        if make_url(url).get_backend_name() == "sqlite":
            _prepare_sqlite_file(url)
        with _UPGRADE_IN_PROCESS:
            command.upgrade(self.config(url), "head")
        log.info("database schema of %s up to date", self.folder.parent.name)


def run_migrations(metadata: MetaData) -> None:
    """The body of every owner's `env.py`: run its revisions under the advisory lock."""
    cfg = context.config
    version_table = cfg.attributes.get("version_table", "alembic_version")
    url = cfg.get_main_option("sqlalchemy.url") or ""
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True,
                          render_as_batch=True, version_table=version_table)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
                connection.commit()
            context.configure(connection=connection, target_metadata=metadata,
                              render_as_batch=True, version_table=version_table)
            with context.begin_transaction():
                context.run_migrations()
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"),
                                   {"k": _MIGRATION_LOCK})
                connection.commit()
    finally:
        engine.dispose()
