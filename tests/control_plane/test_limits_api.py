"""Per-automation ingress limits (issue 13, item 3) in the admin API: `limits` (rate, burst,
largest body) are saved, shown, published in the snapshot, replaced and cleared by PATCH on
both databases; bad values are a 422 naming the field; migration 0004_limits gives existing
automations none (null: the ingress's global settings)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from alembic import command

from automations.snapshot import AutomationSnapshot
from control_plane import api_models as m
from control_plane import service
from control_plane.migrations import MIGRATIONS
from control_plane.migrations import migrate as migrate_control_plane
from control_plane.store.unit import Store
from core.settings import Settings
from schemas import codec
from tests.control_plane.builders import automation_body, make_message, make_survey
from tests.control_plane.test_config_stream import read_topic

pytestmark = pytest.mark.kafka
NONE = {"rate": None, "burst": None, "max_body_bytes": None}


def _problem(r: httpx.Response) -> tuple[str, str]:
    assert r.status_code == 422, r.text
    first = r.json()["errors"][0]
    return first["field"], first["reason"]


async def test_limits_are_saved_shown_published_and_patched(admin: httpx.AsyncClient,
                                                            settings: Settings) -> None:
    survey = await make_survey(admin)
    message = await make_message(admin)
    limits = {"rate": 2.5, "burst": 7, "max_body_bytes": 4096}
    r = await admin.post("/v1/automations", json=automation_body(
        survey["id"], message["id"], limits=limits))
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    assert (await admin.get(f"/v1/automations/{aid}")).json()["limits"] == limits
    listed = (await admin.get("/v1/automations")).json()["items"]
    assert [a["limits"] for a in listed if a["id"] == aid] == [limits]

    # Without them: every limit is the global setting.
    r = await admin.post("/v1/automations", json=automation_body(survey["id"], message["id"]))
    assert r.json()["limits"] == NONE

    # PATCH replaces the object as a whole; other fields leave it alone.
    r = await admin.patch(f"/v1/automations/{aid}", json={"limits": {"burst": 3}})
    assert r.status_code == 200 and r.json()["limits"] == {**NONE, "burst": 3}
    r = await admin.patch(f"/v1/automations/{aid}", json={"delay_days": 1})
    assert r.json()["limits"] == {**NONE, "burst": 3}

    records = await read_topic(settings.kafka_bootstrap, f"{settings.topic_prefix}"
                                                         "automations.config")
    snaps = [AutomationSnapshot.from_record(codec.decode_as("AutomationSnapshot", v))
             for k, v in records if k == aid and v is not None]
    assert [(s.version, s.rate_limit, s.rate_burst, s.max_body_bytes) for s in snaps] == [
        (1, 2.5, 7, 4096), (2, None, 3, None), (3, None, 3, None)]

    r = await admin.patch(f"/v1/automations/{aid}", json={"limits": None})
    assert r.status_code == 200 and r.json()["limits"] == NONE


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_bad_limits_are_a_422_naming_the_field(admin: httpx.AsyncClient,
                                                     settings: Settings) -> None:
    survey = await make_survey(admin)
    message = await make_message(admin)

    async def post(**limits: object) -> tuple[str, str]:
        return _problem(await admin.post("/v1/automations", json=automation_body(
            survey["id"], message["id"], limits=limits)))

    assert (await post(rate=0))[0] == "limits.rate"
    assert (await post(rate=-1.5))[0] == "limits.rate"
    assert (await post(rate="fast"))[0] == "limits.rate"
    assert (await post(burst=0))[0] == "limits.burst"
    assert (await post(burst=1.5))[0] == "limits.burst"
    assert (await post(max_body_bytes=0))[0] == "limits.max_body_bytes"
    assert (await post(per_minute=5))[0] == "limits.per_minute"
    field, reason = await post(max_body_bytes=settings.max_body_bytes + 1)
    assert field == "limits.max_body_bytes"
    assert str(settings.max_body_bytes) in reason and "HOOKSTREAM_MAX_BODY_BYTES" in reason

    r = await admin.post("/v1/automations", json=automation_body(
        survey["id"], message["id"], limits={"max_body_bytes": settings.max_body_bytes}))
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    field, _ = _problem(await admin.patch(f"/v1/automations/{aid}", json={
        "limits": {"max_body_bytes": settings.max_body_bytes + 1}}))
    assert field == "limits.max_body_bytes"
    assert (await admin.get(f"/v1/automations/{aid}")).json()["limits"]["max_body_bytes"] == \
        settings.max_body_bytes  # unchanged by the refused PATCH


def test_migration_gives_existing_automations_no_limits(db_url: str) -> None:
    migrate_control_plane(db_url)
    store = Store(db_url)
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)

    def seed(s):  # noqa: ANN001, ANN202
        survey = service.create_survey(s, m.SurveyIn(name="S"), now)
        msg = service.create_message(s, m.MessageIn(name="M", subject="Hi",
                                                    body="{{ survey_link }}"), now)
        a, _, _ = service.create_automation(s, m.AutomationIn(
            name="A", survey_id=survey.id, message_id=msg.id, email_field="email",
            fields=m.FieldsIn(mode="exclude", paths=[]),
            limits=m.LimitsIn(rate=3.0, burst=4, max_body_bytes=100)), now)
        return a.id
    try:
        aid = store.run(seed)
        snap = store.run(lambda s: service.all_snapshots(s))[0]
        assert (snap.rate_limit, snap.rate_burst, snap.max_body_bytes) == (3.0, 4, 100)
        store.dispose()
        cfg = MIGRATIONS.config(db_url)
        command.downgrade(cfg, "0003_rules")  # as before the limits existed
        command.upgrade(cfg, "head")
        store = Store(db_url)
        a = store.run(lambda s: service.get_automation(s, aid))
        assert (a.rate_limit, a.rate_burst, a.max_body_bytes) == (None, None, None)
        snap = store.run(lambda s: service.all_snapshots(s))[0]
        assert (snap.rate_limit, snap.rate_burst, snap.max_body_bytes) == (None, None, None)
    finally:
        store.dispose()
