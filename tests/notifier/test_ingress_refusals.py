"""The integrator's errors reach the error mails: the ingress counts the requests it refuses
per automation, reports the counts on `automations.errors`, the notifier mails them with the
grouped alert and records them for the admin API's error list, and they never disable."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from control_plane.api import create_app
from core.settings import Settings
from hookstream.local.smtp_sink import SmtpSink
from ingress.app import create_app as create_ingress
from notifier.app import Notifier
from notifier.models import FailureStreak
from notifier.store import Db

from .conftest import ADMIN_TOKEN, Bus, wait_for
from .test_auto_disable import _automation, served

pytestmark = pytest.mark.kafka

SECRET_VALUE = "respondent-secret@example.com"


@pytest.mark.disable_after(3)
async def test_refused_requests_are_mailed_listed_and_never_disable(
        settings: Settings, bus: Bus, smtp: SmtpSink) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with served(create_app(settings), settings.admin_port), \
            httpx.AsyncClient(base_url=settings.admin_url, headers=headers,
                              timeout=10) as admin:
        created = await _automation(admin)
        automation_id, api_key = created["id"], created["api_key"]
        ingress = create_ingress(settings.model_copy(
            update={"ingress_error_report_seconds": 0.5}))
        await ingress.startup()
        try:
            await ingress.wait_ready(60)
            await wait_for(lambda: ingress.cache.get(automation_id), what="the snapshot")
            async with Notifier(settings, group_id="notifier-refusals", migrate_db=False,
                                http=False) as notifier, httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=ingress), base_url="http://ingress") as c:
                await notifier.wait_running()
                url = f"/v1/hooks/{automation_id}"
                json_ = {"Content-Type": "application/json"}
                for _ in range(5):  # a rotated-out key
                    r = await c.post(url, content=b"{}", headers={**json_,
                                                                  "X-API-Key": "old-key"})
                    assert r.status_code == 401
                for _ in range(2):  # bad JSON, holding a respondent's address
                    r = await c.post(url, content=b'{"email": "' + SECRET_VALUE.encode(),
                                     headers={**json_, "X-API-Key": api_key})
                    assert r.status_code == 400
                r = await c.post(url, content=b"{}", headers={"Content-Type": "text/csv",
                                                              "X-API-Key": api_key})
                assert r.status_code == 415
                # An id naming no automation is not counted (bounded cardinality).
                r = await c.post("/v1/hooks/no-such-automation", content=b"{}",
                                 headers={**json_, "X-API-Key": api_key})
                assert r.status_code == 404

                mails = await wait_for(lambda: [m for m in smtp.messages()
                                                if "refused request" in str(m["Subject"])],
                                       timeout=30, what="the alert of refused requests")
                # Counts may arrive in more than one interval: add up every alert.
                await asyncio.sleep(1.5)
                bodies = [m.get_body(("plain",)).get_content()
                          for m in smtp.messages() if "refused request" in str(m["Subject"])]
                assert "8 refused requests" in str(mails[0]["Subject"]) or len(bodies) > 1
                text = "\n".join(bodies)
                assert "refused_invalid_api_key" in text and "refused_bad_json" in text
                assert "refused_unsupported_media_type" in text
                assert "401 invalid_api_key" in text and "never disable" in text
                assert SECRET_VALUE not in text and "old-key" not in text

                # The admin API's error list: one row per interval and code, with its count.
                async def listed() -> dict[str, int] | None:
                    r = await admin.get(f"/v1/automations/{automation_id}/errors")
                    assert r.status_code == 200, r.text
                    got: dict[str, int] = {}
                    for e in r.json()["items"]:
                        assert e["source"] == "ingress" and e["since"] is not None
                        got[e["kind"]] = got.get(e["kind"], 0) + e["count"]
                    return got if sum(got.values()) >= 8 else None

                totals = None
                for _ in range(100):
                    totals = await listed()
                    if totals:
                        break
                    await asyncio.sleep(0.1)
                assert totals == {"refused_invalid_api_key": 5, "refused_bad_json": 2,
                                  "refused_unsupported_media_type": 1}
                r = await admin.get(f"/v1/automations/{automation_id}/errors",
                                    params={"kind": "refused_bad_json"})
                assert {e["kind"] for e in r.json()["items"]} == {"refused_bad_json"}

                # Eight refusals with disable_after 3: still enabled, no streak at all.
                r = await admin.get(f"/v1/automations/{automation_id}")
                assert r.json()["enabled"] is True
                assert not [m for m in smtp.messages() if "was disabled" in str(m["Subject"])]
                db = Db(settings.database_url)
                with db.sessions() as session:
                    streak = session.get(FailureStreak, automation_id)
                    assert streak is None or streak.consecutive == 0
                await db.close()
        finally:
            await ingress.shutdown()
