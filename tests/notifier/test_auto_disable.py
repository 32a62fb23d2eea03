"""Auto-disable through the real control plane: the admin API (uvicorn, in process) disables
the automation, its snapshot carries it, ingress answers 409, the recipients are told why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from control_plane.api import create_app
from core.settings import Settings
from hookstream.local.kafka import free_port
from hookstream.local.smtp_sink import SmtpSink
from ingress.app import create_app as create_ingress
from notifier.app import Notifier
from notifier.metrics import AUTOMATIONS_DISABLED
from notifier.models import FailureStreak
from notifier.store import Db

from .conftest import ADMIN_TOKEN, Bus, automation_error, invitation, wait_for

pytestmark = pytest.mark.kafka


@asynccontextmanager
async def served(app: Any, port: int) -> AsyncIterator[None]:
    """Serve an ASGI app with uvicorn on 127.0.0.1:port for the block (lifespan included)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), timeout=60, what="uvicorn")
        if task.done():
            task.result()
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def _automation(admin: httpx.AsyncClient) -> dict[str, Any]:
    r = await admin.post("/v1/surveys", json={"name": "Customer satisfaction"})
    assert r.status_code == 201, r.text
    survey = r.json()
    r = await admin.post(f"/v1/surveys/{survey['id']}/variables",
                         json={"name": "age", "type": "number"})
    assert r.status_code == 201, r.text
    r = await admin.post("/v1/messages", json={"name": "Invite", "subject": "Your opinion",
                                               "body": "Age {{ age }}: {{ survey_link }}"})
    assert r.status_code == 201, r.text
    r = await admin.post("/v1/automations", json={
        "name": "Webshop orders", "survey_id": survey["id"], "message_id": r.json()["id"],
        "email_field": "email", "fields": {"mode": "exclude", "paths": []},
        "mapping": [{"field": "age", "variable": "age"}], "delay_days": 0, "enabled": True,
        "error_notifications": {"enabled": True,
                                "recipients": ["ops@example.com", "lead@example.com"]}})
    assert r.status_code == 201, r.text
    return r.json()


async def test_ten_failures_in_a_row_disable_the_automation(
        settings: Settings, bus: Bus, smtp: SmtpSink) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ingress_port = free_port()
    async with served(create_app(settings), settings.admin_port), \
            httpx.AsyncClient(base_url=settings.admin_url, headers=headers,
                              timeout=10) as admin:
        created = await _automation(admin)
        automation_id, api_key = created["id"], created["api_key"]
        async with Notifier(settings, group_id="notifier-disable", migrate_db=False,
                            http=False) as notifier:
            await notifier.wait_running()
            assert notifier.config is not None
            await wait_for(lambda: notifier.config.get(automation_id), what="the snapshot")
            before = AUTOMATIONS_DISABLED._value.get()
            # Nine failures, then a success ends the streak: nothing is disabled.
            for _ in range(9):
                await bus.error(automation_error(automation_id))
            await bus.read(bus.topics.errors, "AutomationError", lambda xs: len(xs) >= 9)
            await _wait_recorded(admin, automation_id, 9)
            # A sent invitation (through the same notifier) resets the count.
            snap = notifier.config.get(automation_id)
            assert snap is not None
            await bus.due(invitation(snap, variables={"age": 30}))
            await bus.outcomes(1)
            # Nine more: the streak restarted at zero, so still enabled...
            for _ in range(9):
                await bus.error(automation_error(automation_id, kind="missing_email",
                                                 field="email"))
            await _wait_recorded(admin, automation_id, 18)
            db = Db(settings.database_url)
            with db.sessions() as session:
                streak = session.get(FailureStreak, automation_id)
                assert streak is not None and streak.consecutive == 9
            await db.close()
            assert notifier.config.get(automation_id).enabled  # type: ignore[union-attr]
            # ...and the tenth in a row disables it.
            await bus.error(automation_error(automation_id, kind="missing_email", field="email"))
            await wait_for(lambda: (s := notifier.config.get(automation_id)) is not None
                           and not s.enabled, timeout=30, what="the disabled snapshot")
            await wait_for(lambda: AUTOMATIONS_DISABLED._value.get() == before + 1,
                           what="the disabled metric")

            r = await admin.get(f"/v1/automations/{automation_id}")
            assert r.status_code == 200 and r.json()["enabled"] is False
            reason = notifier.config.get(automation_id).disabled_reason  # type: ignore[union-attr]
            assert reason and "10 consecutive failures" in reason
            await _wait_recorded(admin, automation_id, 19)

            notices = await wait_for(lambda: [m for m in smtp.messages()
                                              if "was disabled" in str(m["Subject"])],
                                     what="the disabled notice")
            assert len(notices) == 1
            notice = notices[0]
            assert "ops@example.com" in notice["To"] and "lead@example.com" in notice["To"]
            body = notice.get_body(("plain",)).get_content()
            assert "10 consecutive failures" in body and "missing_email" in body
            assert f"hookstream automations enable {automation_id}" in body
            assert f"/v1/automations/{automation_id}/enable" in body

        # Ingress reads the same config topic and now refuses the webhook.
        ingress_settings = settings.model_copy(update={"ingress_port": ingress_port})
        async with served(create_ingress(ingress_settings), ingress_port), \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ingress_port}",
                                  timeout=10) as client:
            r = await _post_when_ready(client, automation_id, api_key)
            assert r.status_code == 409, r.text
            assert r.json()["error"] == "automation_disabled"


async def _wait_recorded(admin: httpx.AsyncClient, automation_id: str, n: int) -> None:
    for _ in range(200):
        r = await admin.get(f"/v1/automations/{automation_id}/errors", params={"limit": 100})
        assert r.status_code == 200, r.text
        if len(r.json()["items"]) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"GET /errors never listed {n} errors: {r.text}")


async def _post_when_ready(client: httpx.AsyncClient, automation_id: str,
                           api_key: str) -> httpx.Response:
    for _ in range(200):
        r = await client.post(f"/v1/hooks/{automation_id}", headers={"X-API-Key": api_key},
                              json={"email": "x@example.com", "age": 3})
        if r.status_code != 503:
            return r
        await asyncio.sleep(0.1)
    return r
