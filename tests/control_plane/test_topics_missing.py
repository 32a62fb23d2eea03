"""With HOOKSTREAM_KAFKA_CREATE_TOPICS off, the admin API (which cannot serve before its
start-up ends) stops at start naming the missing topics, and creates none."""

from __future__ import annotations

import pytest

from control_plane.api import create_app
from core.kafka.plan import admin_client
from core.kafka.topics import Topics
from tests.control_plane.conftest import admin_settings


async def test_admin_stops_naming_the_missing_topics(sqlite_url: str, kafka_bootstrap: str,
                                                     topics: Topics) -> None:
    app = create_app(admin_settings(sqlite_url, kafka_bootstrap, topics.prefix,
                                    kafka_create_topics=False))
    with pytest.raises(RuntimeError, match="HOOKSTREAM_KAFKA_CREATE_TOPICS is off") as err:
        async with app.router.lifespan_context(app):
            pass
    assert topics.config in str(err.value) and topics.raw in str(err.value)
    admin = admin_client(kafka_bootstrap)
    await admin.start()
    try:
        assert not [t for t in await admin.list_topics() if t.startswith(topics.prefix)]
    finally:
        await admin.close()
