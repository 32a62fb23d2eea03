"""The invitation rules (issue 16) in the admin API: `throttle_days` and `send_window` are
saved, shown, published in the snapshot, changed and removed by PATCH, and bad values are a
422 naming the field; migration 0003_rules gives existing automations neither rule."""

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
WINDOW = {"days": ["fri", "mon", "wed"], "start": "09:00", "end": "17:30",
          "time_zone": "Europe/Amsterdam", "time_zone_field": "customer.city"}


def _problem(r: httpx.Response) -> tuple[str, str]:
    assert r.status_code == 422, r.text
    first = r.json()["errors"][0]
    return first["field"], first["reason"]


async def test_rules_are_saved_shown_published_and_patched(admin: httpx.AsyncClient,
                                                           settings: Settings) -> None:
    survey = await make_survey(admin)
    message = await make_message(admin)
    # customer.city is mapped onto the text variable `city`: it may hold the zone.
    r = await admin.post("/v1/automations", json=automation_body(
        survey["id"], message["id"], throttle_days=30, send_window=WINDOW))
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    got = (await admin.get(f"/v1/automations/{aid}")).json()
    assert got["throttle_days"] == 30
    assert got["send_window"] == {**WINDOW, "days": ["mon", "wed", "fri"]}  # week order

    # Without them: no limit, any time.
    r = await admin.post("/v1/automations", json=automation_body(survey["id"], message["id"]))
    assert (r.json()["throttle_days"], r.json()["send_window"]) == (0, None)

    r = await admin.patch(f"/v1/automations/{aid}", json={"throttle_days": 7})
    assert r.status_code == 200 and r.json()["throttle_days"] == 7
    assert r.json()["send_window"]["start"] == "09:00"  # untouched
    r = await admin.patch(f"/v1/automations/{aid}", json={"send_window": {
        "start": "08:00", "end": "24:00", "time_zone": "America/New_York"}})
    assert r.status_code == 200, r.text
    assert r.json()["send_window"] == {"days": ["mon", "tue", "wed", "thu", "fri", "sat",
                                                "sun"], "start": "08:00", "end": "24:00",
                                       "time_zone": "America/New_York",
                                       "time_zone_field": None}

    # Every version is on the config topic; the newest carries both rules.
    records = await read_topic(settings.kafka_bootstrap, f"{settings.topic_prefix}"
                                                         "automations.config")
    snaps = [AutomationSnapshot.from_record(codec.decode_as("AutomationSnapshot", v))
             for k, v in records if k == aid and v is not None]
    assert [s.version for s in snaps] == [1, 2, 3]
    assert snaps[0].send_window is not None and snaps[0].send_window.days == ("mon", "wed", "fri")
    assert snaps[0].send_window.time_zone_field == "customer.city"
    assert (snaps[1].throttle_days, snaps[2].throttle_days) == (7, 7)
    assert snaps[2].send_window is not None and snaps[2].send_window.end == "24:00"

    r = await admin.patch(f"/v1/automations/{aid}", json={"send_window": None,
                                                          "throttle_days": 0})
    assert r.status_code == 200
    assert (r.json()["send_window"], r.json()["throttle_days"]) == (None, 0)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_bad_rules_are_a_422_naming_the_field(admin: httpx.AsyncClient) -> None:
    survey = await make_survey(admin)
    message = await make_message(admin)

    async def post(**over: object) -> tuple[str, str]:
        return _problem(await admin.post("/v1/automations", json=automation_body(
            survey["id"], message["id"], **over)))

    assert (await post(throttle_days=-1))[0] == "throttle_days"
    assert (await post(throttle_days=3651))[0] == "throttle_days"
    assert await post(send_window={**WINDOW, "time_zone": "Europe/Amsterdan"}) == (
        "send_window.time_zone", "must be an IANA time zone name, like Europe/Amsterdam")
    field, reason = await post(send_window={**WINDOW, "start": "18:00"})
    assert field == "send_window.end" and "after start" in reason
    assert (await post(send_window={**WINDOW, "start": "9:00"}))[0] == "send_window.start"
    assert (await post(send_window={**WINDOW, "end": "25:00"}))[0] == "send_window.end"
    field, reason = await post(send_window={**WINDOW, "days": ["mon", "mon"]})
    assert field == "send_window.days" and "once" in reason
    assert (await post(send_window={**WINDOW, "days": []}))[0] == "send_window.days"
    assert (await post(send_window={**WINDOW, "days": ["maandag"]}))[0].startswith(
        "send_window.days")
    field, reason = await post(send_window={**WINDOW, "time_zone_field": "order.id"})
    assert field == "send_window.time_zone_field" and "not mapped onto a survey variable" \
        in reason
    # A choice variable may hold zone names too (a number variable may not: unit-tested).
    r = await admin.post("/v1/automations", json=automation_body(
        survey["id"], message["id"], send_window={**WINDOW, "time_zone_field": "plan"}))
    assert r.status_code == 201, r.text
    assert (await post(send_window={**WINDOW, "extra": 1}))[0] == "send_window.extra"

    r = await admin.post("/v1/automations", json=automation_body(
        survey["id"], message["id"], send_window=WINDOW))
    aid = r.json()["id"]
    assert (await admin.patch(f"/v1/automations/{aid}",
                              json={"throttle_days": None})).status_code == 422
    # A mapping change that drops the zone field's mapping would break the window: 422.
    field, _ = _problem(await admin.patch(f"/v1/automations/{aid}", json={
        "mapping": [{"field": "plan", "variable": "plan"}]}))
    assert field == "send_window.time_zone_field"


def test_migration_gives_existing_automations_no_rules(db_url: str) -> None:
    migrate_control_plane(db_url)
    store = Store(db_url)
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)

    def seed(s):  # noqa: ANN001, ANN202
        survey = service.create_survey(s, m.SurveyIn(name="S"), now)
        msg = service.create_message(s, m.MessageIn(name="M", subject="Hi",
                                                    body="{{ survey_link }}"), now)
        a, _, _ = service.create_automation(s, m.AutomationIn(
            name="A", survey_id=survey.id, message_id=msg.id, email_field="email",
            fields=m.FieldsIn(mode="exclude", paths=[]), throttle_days=9,
            send_window=m.SendWindowIn(start="09:00", end="17:00", time_zone="UTC")), now)
        return a.id
    try:
        aid = store.run(seed)
        store.dispose()
        cfg = MIGRATIONS.config(db_url)
        command.downgrade(cfg, "0001_control_plane")  # as before the rules existed
        command.upgrade(cfg, "head")
        store = Store(db_url)
        a = store.run(lambda s: service.get_automation(s, aid))
        assert (a.throttle_days, a.send_window) == (0, None)
        snap = store.run(lambda s: service.all_snapshots(s))[0]
        assert (snap.throttle_days, snap.send_window) == (0, None)
    finally:
        store.dispose()
