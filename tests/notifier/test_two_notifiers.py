"""Issue 13 item 4: two notifier processes on one PostgreSQL database share the due
invitations (the consumer group splits the partitions) and no mail goes out twice.

Real parts only: the session broker, a fresh PostgreSQL database, one aiosmtpd server, two
`hookstream notifier` processes. A few hundred due invitations, each to its own address:
the SMTP server receives each Message-ID exactly once, both processes sent some, and the
outcomes topic has one `sent` outcome per invitation.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import create_engine, func, select

from core.kafka.topics import Topics, ensure_topics
from hookstream.local.kafka import free_port
from hookstream.local.smtp_sink import SmtpSink
from notifier.migrations import migrate
from notifier.models import Invitation, Respondent
from notifier.render import message_id_for
from schemas import codec
from tests.support.groups import group_assignment
from tests.support.processes import stop

from .conftest import Bus, invitation, make_snapshot, wait_for

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
INVITATIONS = 300
PARTITIONS = 6
MAIL_FROM = "surveys@example.org"


@pytest.fixture
def two_notifiers(kafka_bootstrap: str, topics: Topics, postgres_db: str, smtp: SmtpSink,
                  tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    """Two `hookstream notifier` processes, one group, one database; stopped by pid."""
    migrate(postgres_db)  # each process migrates too (under an advisory lock): a no-op then
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for n in (1, 2):
            env = {**os.environ, "HOOKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
                   "HOOKSTREAM_TOPIC_PREFIX": topics.prefix,
                   "HOOKSTREAM_TOPIC_PARTITIONS": str(PARTITIONS),
                   "HOOKSTREAM_DATABASE_URL": postgres_db, "HOOKSTREAM_SMTP_URL": smtp.url,
                   "HOOKSTREAM_MAIL_FROM": MAIL_FROM,
                   "HOOKSTREAM_NOTIFIER_PORT": str(free_port())}
            log = tmp_path / f"notifier{n}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "hookstream.cli", "notifier"],
                                        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            procs.append((proc, log))
        yield procs
    finally:
        for proc, _ in procs:  # both at once: each stop (commit, release claims) takes seconds
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            stop(proc)  # waits for the exit; SIGKILL after 30 s


async def test_two_notifiers_share_the_work_and_mail_each_invitation_once(
        kafka_bootstrap: str, topics: Topics, postgres_db: str, smtp: SmtpSink,
        two_notifiers: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    started = time.monotonic()
    await ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    bus = Bus(kafka_bootstrap, topics)
    await bus.start()
    try:
        snap = make_snapshot()
        await bus.snapshot(snap)  # before the invitations: an unknown automation is waited for

        async def split() -> bool:
            for proc, log in two_notifiers:
                assert proc.poll() is None, log.read_text()[-3000:]
            state, owned = await group_assignment(
                kafka_bootstrap, f"{topics.prefix}hookstream-notifier", topics.due)
            return state == "Stable" and len(owned) == 2 and all(owned) \
                and sorted(p for o in owned for p in o) == list(range(PARTITIONS))

        # Both in the group, the partitions split between them, before any work arrives.
        deadline = time.monotonic() + 40
        while not await split():
            assert time.monotonic() < deadline, "the group never split the partitions"
            await asyncio.sleep(0.2)
        print(f"both notifiers in the group after {time.monotonic() - started:.1f} s")
        produced = time.monotonic()

        reqs = [invitation(snap, email=f"respondent{i}@example.com")
                for i in range(INVITATIONS)]
        assert bus._producer is not None
        sends = [await bus._producer.send(topics.due, codec.encode("InvitationRequested", r),
                                          key=r["invitation_id"].encode()) for r in reqs]
        await asyncio.gather(*sends)

        outcomes = await bus.outcomes(INVITATIONS, timeout=40)
        print(f"{INVITATIONS} outcomes {time.monotonic() - produced:.1f} s after producing")
        await wait_for(lambda: len(smtp.files()) >= INVITATIONS, timeout=20,
                       what="every mail at the SMTP server")
        await asyncio.sleep(1.0)  # a second mail of any invitation would arrive meanwhile
        outcomes = await _every_outcome(kafka_bootstrap, topics.outcomes)
    finally:
        await bus.stop()

    mails = smtp.messages()
    ids = Counter(str(m["Message-ID"]) for m in mails)
    expected = {message_id_for(r["invitation_id"], MAIL_FROM) for r in reqs}
    twice = [mid for mid, n in ids.items() if n > 1]
    assert not twice, f"{len(twice)} invitations mailed more than once"
    assert set(ids) == expected and len(mails) == INVITATIONS
    assert Counter(str(m["To"]) for m in mails) == Counter(r["email"] for r in reqs)

    per_invitation = Counter(o["invitation_id"] for o in outcomes)
    assert per_invitation == Counter(r["invitation_id"] for r in reqs), \
        "not exactly one outcome per invitation"
    assert {o["status"] for o in outcomes} == {"sent"}

    # Both did part of the work: the rows say which process sent each one.
    engine = create_engine(postgres_db)
    try:
        with engine.connect() as conn:
            by_owner = dict(conn.execute(
                select(Invitation.claimed_by, func.count()).where(Invitation.status == "sent")
                .group_by(Invitation.claimed_by)).all())
    finally:
        engine.dispose()
    assert len(by_owner) == 2 and sum(by_owner.values()) == INVITATIONS, by_owner
    print(f"two notifiers: {sorted(by_owner.values())} invitations each, "
          f"{time.monotonic() - started:.1f} s")


async def _every_outcome(bootstrap: str, topic: str) -> list[dict]:
    """Every record of the outcomes topic up to its end now (a duplicate would be one)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(parts)
        out: list[dict] = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(codec.decode_as("InvitationOutcome", r.value) for r in records)
        return out
    finally:
        await consumer.stop()


@pytest.mark.parametrize("impl", ["reference", "dbapi"])  # notifier.store, store_dbapi
async def test_the_claim_is_exact_between_two_notifiers_on_postgresql(postgres_db: str,
                                                                     impl: str) -> None:
    """The SQL half on its own, where the consumer group cannot help: two notifiers (two
    connection pools, two owners) claim the same invitations at the same moment. Exactly one
    of each pair may send; the other finds it taken (`busy`, or the insert's unique key
    refused, which the notifier looks at again); and of two invitations to one address under
    a throttling rule, exactly one is mailed."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    from notifier import store, store_dbapi

    claim = store.claim if impl == "reference" else store_dbapi.claim
    migrate(postgres_db)
    a, b = store.Db(postgres_db), store.Db(postgres_db)
    try:
        kw = {"survey_name": "S", "lease": timedelta(minutes=2), "message_id": "<m@h>"}
        snap = make_snapshot()
        reqs = [invitation(snap, email=f"pair{i}@example.com") for i in range(200)]
        pairs = await asyncio.gather(*(
            asyncio.gather(a.tx(claim, r, owner="A", **kw),
                           b.tx(claim, r, owner="B", **kw), return_exceptions=True)
            for r in reqs))
        for first, second in pairs:
            kinds = sorted(x.kind if isinstance(x, store.SendClaim) else type(x).__name__
                           for x in (first, second))
            assert kinds in (["busy", "new"], ["IntegrityError", "new"]), kinds
            for x in (first, second):
                if not isinstance(x, store.SendClaim):
                    assert isinstance(x, IntegrityError)
        # The loser looks again: the winner's live lease, so it must wait.
        again = await asyncio.gather(*(b.tx(claim, r, owner="B", **kw) for r, (x, _)
                                       in zip(reqs, pairs, strict=True)
                                       if isinstance(x, store.SendClaim) and x.kind == "new"))
        assert {c.kind for c in again} <= {"busy"}

        throttle = store.Throttle(30, timedelta(days=30))
        same = [(invitation(snap, email=f"same{i}@example.com"),
                 invitation(snap, email=f"same{i}@example.com")) for i in range(100)]
        for round_ in ("new respondents", "respondents invited 60 days ago"):
            results = await asyncio.gather(*(
                asyncio.gather(a.tx(claim, x, owner="A", throttle=throttle, **kw),
                               b.tx(claim, y, owner="B", throttle=throttle, **kw),
                               return_exceptions=True) for x, y in same))
            for (x, y), pair in zip(same, results, strict=True):
                kinds = [p.kind if isinstance(p, store.SendClaim) else "error" for p in pair]
                assert sorted(kinds) in (["new", "throttled"], ["error", "new"]), (round_, kinds)
                if "error" in kinds:  # the respondent's unique key: looked at again, throttled
                    loser, owner = (x, "A") if kinds[0] == "error" else (y, "B")
                    again = await a.tx(claim, loser, owner=owner, throttle=throttle, **kw)
                    assert again.kind == "throttled", round_
            # Round two: the same addresses, last invited long ago; two new invitations each.
            engine = create_engine(postgres_db)
            try:
                with engine.begin() as conn:
                    conn.execute(update(Respondent).values(
                        last_invited_at=datetime.now(UTC) - timedelta(days=60)))
            finally:
                engine.dispose()
            same = [(invitation(snap, email=x["email"]), invitation(snap, email=x["email"]))
                    for x, _ in same]
    finally:
        await a.close()
        await b.close()
