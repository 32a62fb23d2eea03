"""Respondent throttling (issue 16) in the notifier: an automation with `throttle_days` = N
does not invite an address its survey invited within N days. The check is the claim's SQL
transaction, so it is exact across notifier replicas (two engines racing on PostgreSQL) and
restarts; a throttled invitation is never mailed and has its own outcome, `throttled`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from core.kafka.topics import Topics, ensure_topics
from core.settings import Settings
from hookstream.local.smtp_sink import SmtpSink
from notifier import store, store_dbapi
from notifier.app import Notifier
from notifier.metrics import INVITATION_OUTCOMES, INVITATIONS_FAILED
from notifier.migrations import migrate
from notifier.models import Invitation, Respondent
from tests.support import postgres

from .conftest import FAST, Bus, invitation, make_snapshot, wait_for

DAY_SECONDS = 3.0


def _count(counter: object, **labels: str) -> float:
    return counter.labels(**labels)._value.get()  # type: ignore[attr-defined]


@pytest.mark.kafka
async def test_an_address_the_survey_invited_within_n_days_is_throttled_not_mailed(
        bus: Bus, notifier: Notifier, smtp: SmtpSink, settings: Settings) -> None:
    throttled_before = _count(INVITATION_OUTCOMES, status="throttled")
    failed_before = _count(INVITATIONS_FAILED, reason="throttled")
    ruled = make_snapshot(throttle_days=30)
    unruled = make_snapshot()  # same survey, no rule of its own
    elsewhere = make_snapshot(throttle_days=30, survey_id="survey-2")
    for snap in (ruled, unruled, elsewhere):
        await bus.snapshot(snap)

    first = invitation(ruled, email="bob@example.com")
    await bus.due(first)
    [sent] = await bus.outcomes(1)
    assert sent["status"] == "sent"
    # Again through the rule, the address in another case: throttled, no mail.
    again = invitation(ruled, email="Bob@Example.COM", variables={"name": "Robert"})
    await bus.due(again)
    outs = await bus.outcomes(2)
    [throttled] = [o for o in outs if o["invitation_id"] == again["invitation_id"]]
    assert throttled["status"] == "throttled" and throttled["attempts"] == 0
    assert "within the automation's 30 day(s)" in throttled["reason"]
    assert "bob" not in throttled["reason"].lower()  # no respondent data in the reason
    assert throttled["message_id"] is None
    # An automation of the same survey without the rule invites; another survey's too.
    await bus.due(invitation(unruled, email="bob@example.com"))
    await bus.due(invitation(elsewhere, email="bob@example.com"))
    outs = await bus.outcomes(4)
    assert sorted(o["status"] for o in outs) == ["sent", "sent", "sent", "throttled"]
    # A replay of the throttled invitation is a duplicate, never a mail.
    await bus.due(again)
    outs = await bus.outcomes(5)
    # Outcomes are keyed by invitation id over several partitions: no order across them.
    replayed = [o for o in outs if o["invitation_id"] == again["invitation_id"]]
    [duplicate] = [o for o in replayed if o["status"] == "duplicate"]
    assert sorted(o["status"] for o in replayed) == ["duplicate", "throttled"]
    assert duplicate["reason"] == "already throttled"
    await asyncio.sleep(0.5)
    assert len(smtp.messages()) == 3

    assert _count(INVITATION_OUTCOMES, status="throttled") == throttled_before + 1
    assert _count(INVITATIONS_FAILED, reason="throttled") == failed_before + 1
    db = store.Db(settings.database_url)
    try:
        with db.sessions() as s:
            row = s.get(Invitation, again["invitation_id"])
            assert row is not None and row.status == "throttled"
            assert row.finished_at is not None and row.attempts == 0
            resp = s.scalars(select(Respondent).where(
                Respondent.survey_id == ruled.survey_id)).one()
            assert row.respondent_id == resp.id  # listed under the respondent's address
            assert resp.variables["name"] == "Bob"  # a throttled invitation changes nothing
    finally:
        await db.close()


@pytest_asyncio.fixture
async def short_day_notifier(settings: Settings, topics: Topics) -> AsyncIterator[Notifier]:
    short = settings.model_copy(update={"day_seconds": DAY_SECONDS})
    await ensure_topics(short.kafka_bootstrap, topics, short.topic_partitions)
    async with Notifier(short, tuning=FAST, group_id=f"notifier-{uuid.uuid4().hex[:8]}",
                        migrate_db=False, http=False) as n:
        await n.wait_running()
        yield n


@pytest.mark.kafka
async def test_after_n_days_the_address_is_invited_again(
        bus: Bus, short_day_notifier: Notifier, smtp: SmtpSink) -> None:
    snap = make_snapshot(throttle_days=1)  # one day of DAY_SECONDS
    await bus.snapshot(snap)
    await bus.due(invitation(snap))
    assert [o["status"] for o in await bus.outcomes(1)] == ["sent"]
    invited = datetime.now(UTC)
    await bus.due(invitation(snap))
    assert [o["status"] for o in await bus.outcomes(2)][-1] == "throttled"
    await asyncio.sleep(max(0.0, DAY_SECONDS + 0.3
                            - (datetime.now(UTC) - invited).total_seconds()))
    await bus.due(invitation(snap))
    assert [o["status"] for o in await bus.outcomes(3)][-1] == "sent"
    assert len(await wait_for(lambda: len(smtp.messages()) == 2 and smtp.messages(),
                              what="two mails")) == 2


# --- exact across replicas: two notifiers' databases engines racing for one address --------

@pytest.fixture(params=["sqlite", "postgresql"])
def shared_db(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # noqa: ANN001
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/notifier.db"
        migrate(url)
        yield url
        return
    server = request.getfixturevalue("postgres_url")
    url, name = postgres.fresh_database(server)
    try:
        migrate(url)
        yield url
    finally:
        postgres.drop_database(server, name)


async def _claim(db: store.Db, req: dict, throttle: store.Throttle | None,
                 claim: Callable[..., store.SendClaim] = store.claim) -> store.SendClaim:
    while True:
        try:
            return await db.tx(claim, req, survey_name="S", owner=f"o-{id(db)}",
                               lease=timedelta(minutes=2), message_id="<m@h>",
                               throttle=throttle)
        except IntegrityError:
            # Both inserted the respondent: the loser retries, as the notifier does.
            await asyncio.sleep(0.01)


@pytest.mark.postgres
@pytest.mark.parametrize("impl", [store.claim, store_dbapi.claim], ids=["reference", "dbapi"])
async def test_two_replicas_racing_for_one_address_invite_it_once(
        shared_db: str, impl: Callable[..., store.SendClaim]) -> None:
    replicas = [store.Db(shared_db), store.Db(shared_db)]
    try:
        snap = make_snapshot(throttle_days=7)
        throttle = store.Throttle(7, timedelta(days=7))
        # Round 1: nobody has the address yet (the respondent's INSERT races).
        reqs = [invitation(snap, email="ann@example.com") for _ in range(24)]
        claims = await asyncio.gather(*(_claim(replicas[i % 2], r, throttle, impl)
                                        for i, r in enumerate(reqs)))
        assert sorted(c.kind for c in claims).count("new") == 1
        assert {c.kind for c in claims} == {"new", "throttled"}
        # Round 2: the address was invited 8 days ago (the conditional UPDATE races).
        with replicas[0].sessions() as s:
            s.execute(update(Respondent).values(
                last_invited_at=datetime.now(UTC) - timedelta(days=8)))
            s.commit()
        reqs = [invitation(snap, email="ann@example.com") for _ in range(24)]
        claims = await asyncio.gather(*(_claim(replicas[i % 2], r, throttle, impl)
                                        for i, r in enumerate(reqs)))
        assert [c.kind for c in claims].count("new") == 1
        with replicas[1].sessions() as s:
            statuses = [r.status for r in s.scalars(select(Invitation))]
        assert statuses.count("sending") == 2 and statuses.count("throttled") == 46
        # A rule-less automation of the survey is not held back, and marks the address.
        free = await _claim(replicas[0], invitation(replace(snap, throttle_days=0),
                                                    email="ann@example.com"), None, impl)
        assert free.kind == "new"
    finally:
        for db in replicas:
            await db.close()
