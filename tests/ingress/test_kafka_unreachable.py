"""An ingress whose bootstrap list does not answer says so in one line naming the list, and
its /readyz stays 503 with that reason, while it keeps retrying."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from ingress.app import create_app
from tests.support.kafka_down import kafka_lines, unreachable_bootstrap


async def test_unreachable_bootstrap_list_one_line_and_not_ready(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bootstrap = unreachable_bootstrap()
    app = create_app(Settings(kafka_bootstrap=bootstrap, topic_prefix="down.", var_dir=tmp_path))
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://ingress") as http:
            seen = 0
            for _ in range(40):  # several connection attempts, each one said at most once
                r = await http.get("/readyz")
                assert r.status_code == 503, r.text
                assert r.json()["checks"]["kafka"] is False
                reason = r.json()["reasons"]["kafka"]  # before the first attempt: "not yet"
                if f"no broker of the bootstrap list {bootstrap} answers" in reason:
                    seen += 1
                if seen >= 6:
                    break
                await asyncio.sleep(0.25)
            assert seen >= 6
        lines = kafka_lines(caplog)
        assert len(lines) == 1, lines
        assert lines[0].startswith("the ingress cannot connect to Kafka: no broker of the "
                                   f"bootstrap list {bootstrap} answers")
    finally:
        await app.shutdown()
