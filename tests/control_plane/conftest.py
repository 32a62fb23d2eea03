"""Fixtures of the control plane's tests: both databases, and a running admin API.

PostgreSQL: the session's server (`postgres_url` in tests/conftest.py); each test gets a
fresh database on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from control_plane.api import create_app
from core.settings import Settings
from tests.support import postgres

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/var/hookstream.db"
        return
    server = request.getfixturevalue("postgres_url")
    url, name = postgres.fresh_database(server)
    try:
        yield url
    finally:
        postgres.drop_database(server, name)


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
