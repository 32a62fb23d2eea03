"""Fixtures of the control plane's tests: both databases, and a running admin API.

PostgreSQL: `HOOKSTREAM_TEST_POSTGRES_URL` when set; else a local server from Debian's
packages (installed with apt-get if missing) started for the session and stopped by pid.
Each test gets a fresh database on it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from control_plane.api import create_app
from core.settings import Settings
from hookstream.local.kafka import free_port
from tests.support import postgres

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server URL (its database may be used as a maintenance database)."""
    named = os.environ.get("HOOKSTREAM_TEST_POSTGRES_URL")
    if named:
        yield named
        return
    # Not under pytest's tmp dir: that is private to root and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="hookstream-pg-"))
    base.chmod(0o755)
    try:
        pg = postgres.start(base / "pg", free_port())
        try:
            yield pg.url
        finally:
            postgres.stop(pg.data_dir)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _fresh_postgres_db(server_url: str) -> tuple[str, str]:
    url = make_url(server_url).set(drivername="postgresql+psycopg")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=url.host, port=url.port, user=url.username,
                         password=url.password, dbname=url.database, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False), name


def _drop_postgres_db(server_url: str, name: str) -> None:
    url = make_url(server_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username,
                         password=url.password, dbname=url.database, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/var/hookstream.db"
        return
    server = request.getfixturevalue("postgres_url")
    url, name = _fresh_postgres_db(server)
    try:
        yield url
    finally:
        _drop_postgres_db(server, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/var/hookstream.db"


def admin_settings(db: str, kafka_bootstrap: str, topic_prefix: str, **extra: object) -> Settings:
    return Settings(database_url=db, kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix,
                    topic_partitions=1, admin_token=SecretStr(ADMIN_TOKEN), **extra)


@pytest.fixture
def settings(db_url: str, kafka_bootstrap: str, topic_prefix: str) -> Settings:
    return admin_settings(db_url, kafka_bootstrap, topic_prefix, key_grace_seconds=3600.0)


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a started admin API (lifespan run: migrations, topics, producer)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
            yield c
