"""A notifier whose bootstrap list does not answer says so in one line naming the list, and
its /readyz (served from the start) stays 503 with that reason."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from core.settings import Settings
from hookstream.local.kafka import free_port
from notifier.app import Notifier
from tests.support.kafka_down import kafka_lines, unreachable_bootstrap


async def test_unreachable_bootstrap_list_one_line_and_not_ready(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bootstrap = unreachable_bootstrap()
    port = free_port()
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix="down.", var_dir=tmp_path,
                        database_url=f"sqlite:///{tmp_path}/n.db", notifier_port=port,
                        smtp_url=SecretStr(f"smtp://127.0.0.1:{free_port()}"))
    notifier = Notifier(settings)
    starting = asyncio.create_task(notifier.start())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            seen = 0
            for _ in range(40):
                await asyncio.sleep(0.25)
                assert not starting.done()
                try:
                    r = await http.get("/readyz")
                except httpx.TransportError:
                    continue  # not listening yet
                assert r.status_code == 503, r.text
                assert r.json()["checks"]["kafka"] is False
                if "reasons" in r.json():
                    assert f"bootstrap list {bootstrap}" in r.json()["reasons"]["kafka"]
                    seen += 1
                if seen >= 4:
                    break
            assert seen >= 4
        lines = kafka_lines(caplog)
        assert len(lines) == 1, lines
        assert lines[0].startswith("the notifier cannot connect to Kafka: no broker of the "
                                   f"bootstrap list {bootstrap} answers")
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
