"""Invitations end to end on a real broker, a real aiosmtpd server and SQLite."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import replace
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from core.settings import Settings
from hookstream.local.smtp_sink import SmtpSink
from notifier import survey_page
from notifier.app import Notifier
from notifier.models import Invitation, Respondent
from notifier.store import Db

from .conftest import Bus, automation_error, invitation, make_snapshot, wait_for

pytestmark = pytest.mark.kafka


def _by_recipient(sink: SmtpSink, address: str) -> list[Any]:
    return [m for m in sink.messages() if address in str(m["To"])]


async def test_invitation_is_mailed_with_values_and_a_working_personal_link(
        bus: Bus, notifier: Notifier, smtp: SmtpSink, settings: Settings) -> None:
    snap = make_snapshot()
    await bus.snapshot(snap)
    req = invitation(snap, email="Bob@Example.com",
                     variables={"name": "Bob <b>", "city": "Utrecht\r\nBcc: x@evil.test",
                                "age": 42})
    stages = {s: REGISTRY.get_sample_value("hookstream_stage_seconds_count", {"stage": s}) or 0
              for s in ("due_wait", "claim", "smtp")}
    await bus.due(req)

    [out] = await bus.outcomes(1)
    assert out["status"] == "sent" and out["invitation_id"] == req["invitation_id"]
    assert out["attempts"] == 1 and out["smtp_code"] == 250
    # Issue 17: the notifier's stages of the end-to-end latency were timed.
    for stage, before in stages.items():
        after = REGISTRY.get_sample_value("hookstream_stage_seconds_count", {"stage": stage})
        assert after is not None and after >= before + 1, stage
    [mail] = await wait_for(smtp.messages, what="the mail")
    assert mail["Message-ID"] == out["message_id"]
    assert req["invitation_id"] in mail["Message-ID"]
    assert mail["Subject"] == "Your opinion, Bob <b>"
    assert "Bcc" not in mail and "x@evil.test" not in str(mail["To"])
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "Dear Bob <b> from Utrecht" in text
    assert "Bob &lt;b&gt;" in html and "<b>" not in html.replace("<body>", "")
    link = re.search(rf"{re.escape(settings.survey_base_url)}/[A-Za-z0-9_-]+", text)
    assert link is not None and f'href="{link.group(0)}"' in html

    # The personal link answers 200 naming survey and respondent; a forged one is 404.
    page_app = survey_page.create_app(settings)
    async with page_app.router.lifespan_context(page_app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=page_app), base_url="http://survey") as client:
        token = link.group(0).rsplit("/", 1)[1]
        page = await client.get(f"/s/{token}")
        assert page.status_code == 200
        assert "Customer satisfaction" in page.text and "bob@example.com" in page.text
        assert (await client.get(f"/s/{token[:-2]}xx")).status_code == 404
        assert (await client.get("/s/short")).status_code == 404
    # Respondent and background data are in SQL.
    db = Db(settings.database_url)
    with db.sessions() as s:
        resp = s.scalars(select(Respondent)).one()
        assert (resp.survey_id, resp.email) == (snap.survey_id, "bob@example.com")
        assert resp.variables["age"] == 42 and resp.variables["name"] == "Bob <b>"
        row = s.get(Invitation, req["invitation_id"])
        assert row is not None and row.status == "sent" and row.attempts == 1
        assert row.message_id == out["message_id"]
    await db.close()


async def test_a_replayed_invitation_is_not_mailed_again(
        bus: Bus, notifier: Notifier, smtp: SmtpSink) -> None:
    snap = make_snapshot()
    await bus.snapshot(snap)
    req = invitation(snap)
    await bus.due(req)
    await bus.due(req)  # redelivered / replayed: same invitation id
    outs = await bus.outcomes(2)
    assert sorted(o["status"] for o in outs) == ["duplicate", "sent"]
    dup = next(o for o in outs if o["status"] == "duplicate")
    assert dup["reason"] == "already sent"
    # Replayed again much later: still a duplicate, still one mail.
    await bus.due(req)
    outs = await bus.outcomes(3)
    assert [o["status"] for o in outs].count("sent") == 1
    assert len(smtp.messages()) == 1


async def test_newest_background_values_win(bus: Bus, notifier: Notifier,
                                            settings: Settings) -> None:
    snap = make_snapshot()
    await bus.snapshot(snap)
    first = invitation(snap, variables={"name": "Bob", "city": "Utrecht", "age": 42})
    await bus.due(first)
    await bus.outcomes(1)
    older = invitation(snap, variables={"name": "Robert", "city": "Delft"},
                       received_at=first["received_at"].replace(year=2020))
    newer = invitation(snap, variables={"city": "Gouda"})
    await bus.due(older)
    await bus.outcomes(2)
    await bus.due(newer)
    await bus.outcomes(3)
    db = Db(settings.database_url)
    with db.sessions() as s:
        resp = s.scalars(select(Respondent)).one()
        assert resp.variables == {"name": "Bob", "city": "Gouda", "age": 42}
    await db.close()


async def test_smtp_down_for_a_while_then_every_invitation_once(
        bus: Bus, notifier: Notifier, smtp: SmtpSink) -> None:
    snap = make_snapshot()
    await bus.snapshot(snap)
    await bus.due(invitation(snap, email="warmup@example.com"))
    await bus.outcomes(1)  # pool connections are open now; the server goes away under them
    # At most 4 in flight, so the notifier fills up while SMTP is down: it waits for a task
    # to finish (keeping what it fetched), and after `full_wait` polls paused (issue 17).
    service = notifier.invitations
    assert service is not None
    service.tuning = replace(service.tuning, max_in_flight=4, full_wait=0.5)
    smtp.stop()
    reqs = [invitation(snap, email=f"r{i}@example.com") for i in range(12)]
    for req in reqs:
        await bus.due(req)
    await wait_for(lambda: notifier.invitations and
                   _retries(notifier) >= 3, what="retries while SMTP is down")
    await wait_for(lambda: len(service._tasks) == 4, what="four invitations in flight")
    await asyncio.sleep(0.6)  # past full_wait: polling paused
    assert len(service._tasks) == 4  # never more than max_in_flight
    smtp.start()  # back, same port
    outs = await bus.outcomes(13, timeout=30)
    assert [o["status"] for o in outs] == ["sent"] * 13
    assert any(o["attempts"] > 1 for o in outs)
    recipients = sorted(str(m["To"]) for m in smtp.messages())
    assert recipients == sorted([f"r{i}@example.com" for i in range(12)]
                                + ["warmup@example.com"])


def _retries(notifier: Notifier) -> float:
    from notifier.metrics import SMTP_RETRIES
    return sum(s.value for m in SMTP_RETRIES.collect() for s in m.samples
               if s.name.endswith("_total"))


async def test_4xx_is_retried_and_5xx_fails_with_an_alert(
        bus: Bus, notifier: Notifier, smtp: SmtpSink) -> None:
    snap = make_snapshot()
    await bus.snapshot(snap)
    handler = smtp.handler
    handler.script["busy@example.com"] = deque(["451 4.3.0 try later", "421 4.3.2 busy"])
    handler.always["gone@example.com"] = "550 5.1.1 <gone@example.com>: no such user"
    busy, gone = invitation(snap, email="busy@example.com"), \
        invitation(snap, email="gone@example.com")
    await bus.due(busy)
    await bus.due(gone)
    outs = {o["invitation_id"]: o for o in await bus.outcomes(2)}
    assert outs[busy["invitation_id"]]["status"] == "sent"
    assert outs[busy["invitation_id"]]["attempts"] == 3
    failed = outs[gone["invitation_id"]]
    assert failed["status"] == "failed" and failed["smtp_code"] == 550
    assert "gone@example.com" not in (failed["reason"] or "")  # scrubbed
    errors = await bus.read(bus.topics.errors, "AutomationError", lambda xs: len(xs) >= 1)
    assert errors[0]["kind"] == "smtp_permanent"
    assert errors[0]["invitation_id"] == gone["invitation_id"]
    assert "gone@example.com" not in errors[0]["detail"]
    # The error recipients get an alert naming the kind, without the respondent's address.
    alerts = await wait_for(lambda: _by_recipient(smtp, "ops@example.com"), what="alert")
    assert "lead@example.com" in str(alerts[0]["To"])
    body = alerts[0].get_body(("plain",)).get_content()
    assert "smtp_permanent: 1" in body and "gone@example.com" not in body


async def test_disabled_automation_holds_and_deleted_one_suppresses(
        bus: Bus, notifier: Notifier, smtp: SmtpSink) -> None:
    snap = make_snapshot(enabled=False, version=2)
    await bus.snapshot(snap)
    from dataclasses import replace
    unknown = replace(snap, id="never-published")
    await bus.due(invitation(snap))
    await bus.due(invitation(unknown))
    outs = await bus.outcomes(2)
    assert sorted((o["status"], o["reason"]) for o in outs) == [
        ("held", "automation disabled"), ("suppressed", "automation deleted")]
    assert smtp.messages() == []


def _told(sink: SmtpSink) -> int:
    """How many errors the alert mails received so far reported, together."""
    return sum(int(m.group(1)) for mail in sink.messages()
               if (m := re.search(r"reported (\d+) error", mail.get_body(("plain",))
                                  .get_content())))


@pytest.mark.disable_after(1000)
async def test_alerts_are_grouped_per_interval_and_follow_recipient_changes(
        bus: Bus, notifier: Notifier, smtp: SmtpSink, settings: Settings) -> None:
    snap = make_snapshot(error_recipients=("first@example.com",))
    await bus.snapshot(snap)
    for _ in range(4):
        await bus.error(automation_error(snap.id))
    await wait_for(lambda: _by_recipient(smtp, "first@example.com"), what="first alert")
    # The recipients change: the next alert goes to the new list.
    from dataclasses import replace
    await bus.snapshot(replace(snap, version=2, error_recipients=("second@example.com",)))
    for _ in range(30):
        await bus.error(automation_error(snap.id, kind="missing_email", field="email"))
    await wait_for(lambda: _told(smtp) >= 34, what="every error told")
    alerts = smtp.messages()
    assert _told(smtp) == 34  # every error told once, in a few mails
    assert len(alerts) <= 5
    assert _by_recipient(smtp, "second@example.com")
    assert all("Auto-Submitted" in m for m in alerts)


@pytest.mark.disable_after(100_000)
async def test_a_flood_of_errors_is_recorded_and_told_in_a_few_mails(
        bus: Bus, notifier: Notifier, smtp: SmtpSink, settings: Settings) -> None:
    snap = make_snapshot(error_recipients=("ops@example.com",))
    await bus.snapshot(snap)
    flood = [automation_error(snap.id, kind=kind) for kind in ("type_mismatch",
                                                                "missing_email") * 1000]
    await bus.errors(flood)
    await wait_for(lambda: _told(smtp) >= 2000, timeout=60, what="every error told")
    assert _told(smtp) == 2000
    mails = smtp.messages()
    assert len(mails) <= 6  # 0.6 s interval: a handful of mails, not 2000
    body = "\n".join(m.get_body(("plain",)).get_content() for m in mails)
    assert "type_mismatch" in body and "missing_email" in body
    db = Db(settings.database_url)
    from sqlalchemy import func

    from notifier.models import AutomationErrorRow
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(AutomationErrorRow)) == 2000
    await db.close()
