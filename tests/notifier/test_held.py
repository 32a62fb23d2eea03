"""Issue 15, item 6: disabling an automation holds its invitations, it does not discard
them. Real broker, aiosmtpd and SQLite (migrated through 0104_held)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from control_plane.api import create_app
from core.kafka.topics import Topics, ensure_topics
from core.settings import Settings
from hookstream.local.smtp_sink import SmtpSink
from notifier.app import Notifier
from notifier.models import Invitation
from notifier.store import HELD_DELETED, Db

from .conftest import ADMIN_TOKEN, FAST, Bus, invitation, make_snapshot, wait_for
from .test_auto_disable import _automation, served

pytestmark = pytest.mark.kafka

SWEEP = replace(FAST, held_sweep_interval=0.2)


def _final(outs: list[dict], iid: str) -> list[str]:
    """The statuses of one invitation, in order (its key keeps them on one partition)."""
    return [o["status"] for o in outs if o["invitation_id"] == iid]


def _last(outs: list[dict], iid: str) -> dict:
    return [o for o in outs if o["invitation_id"] == iid][-1]


def _rows(url: str) -> dict[str, tuple[str, str | None, bool]]:
    db = Db(url)
    try:
        with db.sessions() as s:
            return {r.id: (r.status, r.reason, r.request is not None) for r in s.execute(
                select(Invitation.id, Invitation.status, Invitation.reason,
                       Invitation.request)).all()}
    finally:
        db.engine.dispose()


async def _consuming(bus: Bus, smtp: SmtpSink) -> int:
    """Wait until the notifier has joined its group and handles invitations (an enabled
    automation's one, mailed): timings measured after this are the notifier's own."""
    warm = make_snapshot()
    await bus.snapshot(warm)
    await bus.due(invitation(warm, email="warm-up@example.com"))
    await bus.outcomes(1, timeout=60)
    await wait_for(smtp.messages, what="the warm-up mail")
    return 1


async def test_held_while_disabled_then_mailed_once_when_enabled_or_expired(
        bus: Bus, settings: Settings, topics: Topics, smtp: SmtpSink) -> None:
    # The default hold expiry (7 days): `late` was due 8 days ago, so past it at once.
    await ensure_topics(settings.kafka_bootstrap, topics, settings.topic_partitions)
    snap = make_snapshot(enabled=False, version=2)
    await bus.snapshot(snap)
    kept = invitation(snap, email="kept@example.com")
    late = invitation(snap, email="late@example.com",
                      due_at=datetime.now(UTC) - timedelta(days=8))
    n = Notifier(settings, tuning=SWEEP, group_id=f"notifier-{uuid.uuid4().hex[:8]}",
                 migrate_db=False)
    await n.start()
    try:
        await n.wait_running()
        await bus.due(kept)
        await bus.due(late)
        outs = await bus.outcomes(2)
        assert _final(outs, kept["invitation_id"]) == ["held"]
        assert _final(outs, late["invitation_id"]) == ["expired"]
        assert smtp.messages() == []
        rows = _rows(settings.database_url)
        assert rows[kept["invitation_id"]][0] == "held" and rows[kept["invitation_id"]][2]
        assert rows[late["invitation_id"]][0] == "expired"
        await wait_for(lambda: REGISTRY.get_sample_value("hookstream_invitations_held") == 1,
                       what="the held gauge")

        # A replay while still disabled says `held` again: not a duplicate, not mailed.
        await bus.due(kept)
        outs = await bus.outcomes(3)
        assert _final(outs, kept["invitation_id"]) == ["held", "held"]

        # Enabled again: the held invitation is mailed, once.
        await bus.snapshot(replace(snap, enabled=True, version=3))
        outs = await bus.outcomes(4)
        assert _final(outs, kept["invitation_id"]) == ["held", "held", "sent"]
        [mail] = await wait_for(smtp.messages, what="the held invitation's mail")
        assert "kept@example.com" in str(mail["To"])
        assert mail["Message-ID"] == _last(outs, kept["invitation_id"])["message_id"]
        # A replay after it was sent is a duplicate; no second mail.
        await bus.due(kept)
        outs = await bus.outcomes(5)
        assert _last(outs, kept["invitation_id"])["status"] == "duplicate"
        assert _rows(settings.database_url)[kept["invitation_id"]] == ("sent", None, False)
        assert len(smtp.messages()) == 1
    finally:
        await n.stop()


async def test_held_invitation_expires_while_the_automation_stays_disabled(
        bus: Bus, settings: Settings, topics: Topics, smtp: SmtpSink) -> None:
    # Four seconds of hold expiry (4 days of 1 s), counted from the due time.
    quick = settings.model_copy(update={"day_seconds": 1.0, "hold_expiry_days": 4.0})
    await ensure_topics(quick.kafka_bootstrap, topics, quick.topic_partitions)
    snap = make_snapshot(enabled=False, version=2)
    await bus.snapshot(snap)
    n = Notifier(quick, tuning=SWEEP, group_id=f"notifier-{uuid.uuid4().hex[:8]}",
                 migrate_db=False)
    await n.start()
    try:
        await n.wait_running()
        seen = await _consuming(bus, smtp)
        req = invitation(snap)
        await bus.due(req)
        outs = await bus.outcomes(seen + 2, timeout=30)
        assert _final(outs, req["invitation_id"]) == ["held", "expired"]
        assert "expired" in (_last(outs, req["invitation_id"])["reason"] or "")
        # Enabling it afterwards sends nothing: expired is final.
        await bus.snapshot(replace(snap, enabled=True, version=3))
        await bus.due(req)
        outs = await bus.outcomes(seen + 3)
        assert _final(outs, req["invitation_id"]) == ["held", "expired", "duplicate"]
        assert [m for m in smtp.messages() if "warm-up" not in str(m["To"])] == []
    finally:
        await n.stop()


async def test_deleting_the_automation_drops_its_held_invitations(
        bus: Bus, notifier: Notifier, settings: Settings, smtp: SmtpSink) -> None:
    snap = make_snapshot(enabled=False, version=2)
    await bus.snapshot(snap)
    reqs = [invitation(snap, email=f"r{i}@example.com") for i in range(3)]
    for req in reqs:
        await bus.due(req)
    outs = await bus.outcomes(3)
    assert {o["status"] for o in outs} == {"held"}
    await bus.tombstone(snap.id)
    outs = await bus.outcomes(6)
    for req in reqs:
        assert _final(outs, req["invitation_id"]) == ["held", "suppressed"]
        assert _last(outs, req["invitation_id"])["reason"] == HELD_DELETED
    assert {v[0] for v in _rows(settings.database_url).values()} == {"suppressed"}
    assert smtp.messages() == []


async def test_admin_api_lists_counts_and_deletes_held_invitations(
        settings: Settings, bus: Bus, smtp: SmtpSink) -> None:
    """Through the real control plane: disabled with the admin API (as auto-disable does),
    the held invitations are listed and counted there, and the DELETE says how many it
    dropped."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with served(create_app(settings), settings.admin_port), \
            httpx.AsyncClient(base_url=settings.admin_url, headers=headers,
                              timeout=10) as admin:
        created = await _automation(admin)
        automation_id = created["id"]
        r = await admin.post(f"/v1/automations/{automation_id}/disable",
                             json={"reason": "ten failures in a row"})
        assert r.status_code == 200 and r.json()["enabled"] is False
        async with Notifier(settings, tuning=SWEEP, group_id="notifier-held-admin",
                            migrate_db=False, http=False) as notifier:
            await notifier.wait_running()
            assert notifier.config is not None
            await wait_for(lambda: (s := notifier.config.get(automation_id)) is not None
                           and not s.enabled, what="the disabled snapshot")
            snap = replace(make_snapshot(automation_id), survey_id=created["survey_id"])
            reqs = [invitation(snap, email=f"r{i}@example.com") for i in range(2)]
            for req in reqs:
                await bus.due(req)
            assert {o["status"] for o in await bus.outcomes(2)} == {"held"}

            listed = (await admin.get("/v1/invitations", params={
                "automation_id": automation_id, "status": "held"})).json()["items"]
            assert sorted(x["id"] for x in listed) == sorted(r["invitation_id"] for r in reqs)
            assert {x["reason"] for x in listed} == {"automation disabled"}
            outcomes = (await admin.get(f"/v1/automations/{automation_id}/outcomes")).json()
            assert outcomes["held"] == 2 and outcomes["mailed"] == 0

            gone = await admin.delete(f"/v1/automations/{automation_id}")
            assert gone.status_code == 200
            assert gone.json() == {"automation_id": automation_id, "held_dropped": 2}
            outs = await bus.outcomes(4)
            for req in reqs:
                assert _final(outs, req["invitation_id"]) == ["held", "suppressed"]
                assert _last(outs, req["invitation_id"])["reason"] == HELD_DELETED
            assert smtp.messages() == []
