"""Pure parts of the notifier: SMTP URL, rendering and header safety, failure verdicts,
offset bookkeeping, backoff. Plus the SMTP pool and sink against a real aiosmtpd server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiosmtplib
import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from hookstream.local.smtp_sink import SmtpSink
from notifier.invitations import backoff
from notifier.mailer import SendError, SmtpPool, classify
from notifier.offsets import OffsetTracker
from notifier.render import (
    MessageError,
    invitation_mail,
    message_id_for,
    parse,
    plain_mail,
    scrub,
)
from notifier.smtp_config import SmtpConfig, SmtpUrlError

FROM = "hookstream <no-reply@hookstream.local>"


# --- SMTP URL -------------------------------------------------------------------------------

def test_smtp_url_forms() -> None:
    c = SmtpConfig.from_url("smtp://us%40er:p%3Ass@mail.example.com:587?starttls=1&timeout=5")
    assert (c.host, c.port, c.username, c.password) == ("mail.example.com", 587, "us@er",
                                                        "p:ss")
    assert c.start_tls is True and not c.use_tls and c.timeout == 5
    assert "p:ss" not in repr(c) and "p:ss" not in c.safe_url()
    s = SmtpConfig.from_url("smtps://u:secret@mail.example.com")
    assert s.use_tls and s.port == 465 and s.start_tls is False
    plain = SmtpConfig.from_url("smtp://127.0.0.1:8025")
    assert plain.start_tls is None and plain.username is None and plain.port == 8025
    assert SmtpConfig.from_url("smtp://h?verify=0").validate_certs is False


@pytest.mark.parametrize("url", ["http://h", "smtp://", "smtp://h?starttls=maybe",
                                 "smtps://h?starttls=1", "smtp://h:99999",
                                 "smtp://h?timeout=soon"])
def test_bad_smtp_urls_are_refused_with_a_reason(url: str) -> None:
    with pytest.raises(SmtpUrlError) as exc:
        SmtpConfig.from_url(url)
    assert str(exc.value)


# --- rendering --------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(name=st.text(), city=st.text())
def test_no_value_reaches_a_header_and_html_is_escaped(name: str, city: str) -> None:
    raw = invitation_mail(subject="Hello {{ name }} in {{ city }}",
                          body="Dear {{ name }},\n\n{{ city }} {{ survey_link }}",
                          values={"name": name, "city": city}, link="http://x/s/tok",
                          to="bob@example.com", mail_from=FROM, message_id="<i.invitation@h>")
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if line[:1] not in b" \t"]
    assert names == [b"From", b"To", b"Subject", b"Message-ID", b"Date", b"MIME-Version",
                     b"Content-Type"]
    mail = parse(raw)
    assert "\n" not in str(mail["Subject"]) and "\r" not in str(mail["Subject"])
    html = mail.get_body(("html",)).get_content()
    tags = {t.split()[0] if t.split() else t for t in re.findall(r"<([^>]*)>", html)}
    assert tags <= {"!DOCTYPE", "html", "/html", "body", "/body", "p", "/p", "br", "a", "/a"}


def test_html_and_text_parts_and_the_link() -> None:
    raw = invitation_mail(subject="Hi {{ name }}", body="Dear {{ name }},\nanswer here",
                          values={"name": "<b>Ann</b> & co"}, link="http://x/s/a?b=1&c=2",
                          to="ann@example.com", mail_from=FROM, message_id="<m@h>")
    mail = parse(raw)
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "Dear <b>Ann</b> & co," in text and text.rstrip().endswith("http://x/s/a?b=1&c=2")
    assert "&lt;b&gt;Ann&lt;/b&gt; &amp; co" in html
    assert '<a href="http://x/s/a?b=1&amp;c=2">' in html  # link added although not in body
    # An HTML template keeps its markup; its values are escaped.
    raw = invitation_mail(subject="s", body='<p>Hi {{ name }}</p><a href="{{ survey_link }}">go'
                          "</a>", values={"name": "<i>x</i>"}, link="http://x/s/t",
                          to="a@example.com", mail_from=FROM, message_id="<m@h>")
    html = parse(raw).get_body(("html",)).get_content()
    assert '<p>Hi &lt;i&gt;x&lt;/i&gt;</p><a href="http://x/s/t">go</a>' in html


def test_unusable_addresses_are_refused() -> None:
    for to in ("bob@example.com\r\nBcc: x@evil.test", "not-an-address", "a b@example.com",
               "bøb@example.com\nBcc: x@evil.test"):
        with pytest.raises(MessageError):
            invitation_mail(subject="s", body="b", values={}, link="l", to=to, mail_from=FROM,
                            message_id="<m@h>")
    raw = invitation_mail(subject="s", body="b", values={}, link="l", to="bob@exämple.com",
                          mail_from=FROM, message_id="<m@h>")
    assert parse(raw)["To"] == "bob@xn--exmple-cua.com"
    # Issue 15: a non-ASCII local part stays as it is (RFC 6532: the pool sends it with
    # SMTPUTF8, or fails it as smtputf8_unsupported); only that header carries UTF-8.
    raw = invitation_mail(subject="s", body="b", values={}, link="l", to="bøb@bücher.example",
                          mail_from=FROM, message_id="<m@h>")
    assert parse(raw)["To"] == "bøb@xn--bcher-kva.example"
    assert b"To: b\xc3\xb8b@xn--bcher-kva.example\r\n" in raw


def test_a_value_like_an_encoded_word_stays_literal_in_the_subject() -> None:
    # Issue 15: copied raw, `=?utf-8?b?...?=` is decoded by every mail client ("Hello");
    # encoded itself, the respondent sees exactly the value. Line breaks stay impossible.
    for value in ("=?utf-8?b?SGVsbG8=?=", "x =?iso-8859-1?q?caf=E9?= y", "=?UTF-8?Q?a?="):
        raw = invitation_mail(subject="Hi {{ name }}", body="b", values={"name": value},
                              link="l", to="a@example.com", mail_from=FROM,
                              message_id="<m@h>")
        assert parse(raw)["Subject"] == f"Hi {value}"
        subject_line = raw.split(b"\r\nSubject: ", 1)[1].split(b"\r\n", 1)[0]
        assert value.encode() not in subject_line  # not raw on the wire
    raw = invitation_mail(subject="Hi {{ name }}", body="b",
                          values={"name": "=?utf-8?b?SGk=?=\r\nBcc: x@evil.test"}, link="l",
                          to="a@example.com", mail_from=FROM, message_id="<m@h>")
    mail = parse(raw)
    assert "Bcc" not in mail and mail["Subject"] == "Hi =?utf-8?b?SGk=?= Bcc: x@evil.test"
    # Plain subjects are unchanged on the wire.
    raw = invitation_mail(subject="Your opinion, {{ name }}", body="b", values={"name": "Ann"},
                          link="l", to="a@example.com", mail_from=FROM, message_id="<m@h>")
    assert b"\r\nSubject: Your opinion, Ann\r\n" in raw


def test_message_id_is_stable_and_alerts_are_auto_submitted() -> None:
    assert message_id_for("abc", FROM) == message_id_for("abc", FROM) == \
        "<abc.invitation@hookstream.local>"
    mail = parse(plain_mail(subject="x\ny", text="t", to=["a@b.org", "c@d.org"],
                            mail_from=FROM))
    assert mail["Auto-Submitted"] == "auto-generated" and mail["Subject"] == "x y"
    assert scrub("550 <bob@example.com> unknown") == "550 <<address>> unknown"


# --- verdicts, offsets, backoff -----------------------------------------------------------------

def test_smtp_failures_are_classified() -> None:
    assert not classify(aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "no such user", "x@y")])).transient
    temp = classify(aiosmtplib.SMTPResponseException(451, "try later"))
    assert temp.transient and temp.code == 451 and not temp.infrastructure
    down = classify(ConnectionRefusedError("refused"))
    assert down.transient and down.infrastructure and down.kind == "connection"
    auth = classify(aiosmtplib.SMTPAuthenticationError(535, "bad credentials"))
    assert auth.transient and auth.infrastructure  # a config problem: retried, not failed
    with pytest.raises(ZeroDivisionError):
        classify(ZeroDivisionError())


@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=60))
def test_committed_offsets_never_pass_an_unfinished_record(ops: list[tuple[int, bool]]) -> None:
    tracker = OffsetTracker()
    tp = TopicPartition("t", 0)
    next_offset, open_offsets = 0, []
    for pick, add in ops:
        if add or not open_offsets:
            tracker.add(tp, next_offset)
            open_offsets.append(next_offset)
            next_offset += 1
        else:
            tracker.done(tp, open_offsets.pop(pick % len(open_offsets)))
        position = tracker.committable().get(tp)
        if position is not None:
            assert all(o >= position for o in open_offsets)
            tracker.committed({tp: position})
    for o in open_offsets:
        tracker.done(tp, o)
    if next_offset:
        assert tracker.committable().get(tp, next_offset) == next_offset


@given(st.integers(1, 40))
def test_backoff_grows_with_jitter_and_is_capped(attempt: int) -> None:
    delay = backoff(attempt, 0.5, 30.0)
    ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
    assert ceiling / 2 <= delay <= ceiling


# --- pool and sink against a real aiosmtpd server ------------------------------------------------

async def test_pool_reuses_connections_authenticates_and_recovers(tmp_path: Path) -> None:
    with SmtpSink(tmp_path / "mail", auth=("user", "p@ss word")) as sink:
        pool = SmtpPool(SmtpConfig.from_url(sink.url), 2)
        mails = [plain_mail(subject=f"m{i}", text="t", to=[f"r{i}@example.com"],
                            mail_from=FROM) for i in range(20)]
        await asyncio.gather(*(pool.send(m, "no-reply@hookstream.local", [f"r{i}@example.com"])
                               for i, m in enumerate(mails)))
        assert len(sink.files()) == 20
        bad = SmtpPool(SmtpConfig.from_url(sink.url.replace("p%40ss", "wrong")), 1)
        with pytest.raises(SendError) as exc:
            await bad.send(mails[0], "no-reply@hookstream.local", ["r0@example.com"])
        assert exc.value.code == 535 and exc.value.infrastructure
        await bad.close()
        sink.stop()
        with pytest.raises(SendError) as exc:
            await pool.send(mails[0], "no-reply@hookstream.local", ["r0@example.com"])
        assert exc.value.transient and exc.value.kind == "connection"
        sink.start()  # back on the same port: the pool reconnects by itself
        await pool.send(mails[0], "no-reply@hookstream.local", ["r0@example.com"])
        assert len(sink.files()) == 21
        await pool.close()
    assert sorted(str(m["Subject"]) for m in sink.messages())[:2] == ["m0", "m0"]


async def test_probe_server_liveness_apart_from_readiness() -> None:
    """The notifier's (and the worker's) probe server: /healthz answers 200 whatever the
    checks say, /readyz is 503 naming the failing check until it passes; /metrics serves the
    notifier's metrics; a port already taken is a clear OSError, not a SystemExit."""
    import socket

    import httpx

    from core.serving import ProbeServer

    state = {"consumer": False, "database": True}
    server = ProbeServer("127.0.0.1", 0, lambda: dict(state), name="test")
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            r = await client.get("/readyz")
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["checks"] == {"consumer": False, "database": True}
            assert r.json()["detail"] == "not ready: consumer"
            state["consumer"] = True
            r = await client.get("/readyz")
            assert r.status_code == 200 and r.json()["status"] == "ready"
            metrics = (await client.get("/metrics")).text
            for name in ("hookstream_invitations_sent_total", "hookstream_smtp_seconds_bucket",
                         "hookstream_alerts_sent_total", "hookstream_automations_disabled_total"):
                assert name in metrics
            assert (await client.get("/nope")).status_code == 404
        taken = ProbeServer("127.0.0.1", server.port, lambda: {}, name="second")
        with pytest.raises(OSError, match=f"cannot serve probes on 127.0.0.1:{server.port}"):
            await taken.start()
    finally:
        await server.stop()
    with socket.socket() as probe:  # stopped: the port is free again
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0


async def test_smtp_pool_check_follows_the_server(tmp_path: Path) -> None:
    """Readiness's SMTP check: false while nothing listens, true once a server takes a
    session (a NOOP on the pooled connection after that), false again when it goes."""
    from hookstream.local.kafka import free_port

    port = free_port()
    pool = SmtpPool(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}?timeout=2"), 2)
    try:
        assert await pool.check(max_age=0) is False
        with SmtpSink(tmp_path / "mail", port=port):
            assert await pool.check(max_age=0) is True
            assert await pool.check(max_age=0) is True  # NOOP on the open connection
            assert await pool.check(max_age=60) is True  # fresh verdict: no round trip
        assert await pool.check(max_age=0) is False
    finally:
        await pool.close()
    assert await pool.check(max_age=0) is False  # closed


# --- the exactly-once claim (SQL) -----------------------------------------------------------

async def test_claim_guards_one_send_and_takes_over_a_dead_senders_lease(tmp_path: Path) -> None:
    from datetime import timedelta

    from notifier import store
    from notifier.migrations import migrate

    from .conftest import invitation, make_snapshot

    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    db = store.Db(url)
    try:
        req = invitation(make_snapshot())
        lease = timedelta(minutes=2)
        kw = {"survey_name": "S", "lease": lease, "message_id": "<m@h>"}
        first = await db.tx(store.claim, req, owner="A", **kw)
        assert first.kind == "new" and len(first.token) >= 32
        # Another notifier while A's lease is alive: busy, it must wait.
        assert (await db.tx(store.claim, req, owner="B", **kw)).kind == "busy"
        # A died: once the lease ran out, B takes over (same token: same personal link).
        taken = await db.tx(store.claim, req, owner="B", **{**kw, "lease": timedelta(0)})
        assert taken.kind == "reclaimed" and taken.token == first.token
        await db.tx(store.finish, req["invitation_id"], status="sent", attempts=2,
                    smtp_code=250)
        done = await db.tx(store.claim, req, owner="C", **kw)
        assert (done.kind, done.status, done.attempts, done.outcome_published) == \
            ("final", "sent", 2, False)
        await db.tx(store.mark_published, [req["invitation_id"]])
        assert (await db.tx(store.claim, req, owner="C", **kw)).outcome_published
        # Concurrent claims of many invitations in one batch: each gets its own row.
        reqs = [invitation(make_snapshot(), email=f"x{i}@example.com") for i in range(50)]
        claims = await asyncio.gather(*(db.tx(store.claim, r, owner="A", **kw) for r in reqs))
        assert {c.kind for c in claims} == {"new"} and len({c.token for c in claims}) == 50
    finally:
        await db.close()


@pytest.mark.parametrize("impl", ["reference", "dbapi"])
async def test_db_batches_survive_a_broken_kept_connection(tmp_path: Path, impl: str) -> None:
    """The batcher keeps one connection; one the driver reports broken (here its DBAPI
    connection closed under it, as a database restart would) is dropped and the batch runs
    once more on a fresh one: the caller sees its result, and it is committed once. So too
    for the claim on the driver's cursor (store_dbapi), which raises SQLAlchemy's errors."""
    from datetime import timedelta

    from notifier import store, store_dbapi
    from notifier.migrations import migrate

    from .conftest import invitation, make_snapshot

    claim = store.claim if impl == "reference" else store_dbapi.claim
    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    db = store.Db(url)
    try:
        kw = {"survey_name": "S", "lease": timedelta(minutes=2), "message_id": "<m@h>"}
        first = await db.tx(claim, invitation(make_snapshot()), owner="A", **kw)
        assert first.kind == "new"
        kept = db._conn
        assert kept is not None
        kept.connection.dbapi_connection.close()  # type: ignore[union-attr]
        req = invitation(make_snapshot(), email="after@example.com")
        again = await db.tx(claim, req, owner="A", **kw)
        assert again.kind == "new"
        assert db._conn is not None and db._conn is not kept
        # Committed, once: the same invitation now reads back as claimed by A.
        assert (await db.tx(claim, req, owner="B", **kw)).kind == "busy"
    finally:
        await db.close()


async def test_held_rows_wait_resume_once_expire_and_are_dropped_on_delete(
        tmp_path: Path) -> None:
    """Issue 15: the SQL life of a held invitation (claim under a hold, then without)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from notifier import store
    from notifier.migrations import migrate
    from notifier.models import Invitation
    from schemas import codec

    from .conftest import invitation, make_snapshot

    url = f"sqlite:///{tmp_path}/db.sqlite"
    migrate(url)
    db = store.Db(url)
    try:
        week = timedelta(days=7)
        kw = {"survey_name": "S", "lease": timedelta(minutes=2), "message_id": "<m@h>",
              "expiry": week}
        snap = make_snapshot()
        req, old, gone = (invitation(snap, email=f"{n}@example.com") for n in ("a", "o", "g"))
        old["due_at"] = datetime.now(UTC) - timedelta(days=8)
        hold = store.Hold("automation disabled", codec.encode("InvitationRequested", req))

        first = await db.tx(store.claim, req, owner="A", hold=hold, **kw)
        assert (first.kind, first.status, first.reason) == ("held", "held",
                                                            "automation disabled")
        assert (await db.tx(store.claim, req, owner="B", hold=hold, **kw)).kind == "held"
        expired = await db.tx(store.claim, old, owner="A", hold=hold, **kw)
        assert expired.kind == "expired" and "expired" in (expired.reason or "")
        await db.tx(store.claim, gone, owner="A", hold=hold, **kw)

        # The sweep's list: nothing while the automation is disabled and within the expiry.
        cutoff = datetime.now(UTC) - week
        sweep = {"cutoff": cutoff, "lease": timedelta(minutes=2), "limit": 10}
        assert await db.run(store.held, disabled=[snap.id], **sweep) == []
        rows = await db.run(store.held, disabled=[], **sweep)
        assert {r.invitation_id for r in rows} == {req["invitation_id"], gone["invitation_id"]}
        assert codec.decode_as("InvitationRequested", rows[0].request)["email"].endswith(
            "@example.com")
        assert await db.run(store.held_count) == 2

        # Enabled again: one notifier resumes it (a second one finds it taken), same token.
        resumed = await db.tx(store.claim, req, owner="A", **kw)
        assert resumed.kind == "new" and resumed.token == first.token
        assert (await db.tx(store.claim, req, owner="B", **kw)).kind == "busy"
        await db.tx(store.finish, req["invitation_id"], status="sent", attempts=1,
                    smtp_code=250)
        # Deleted: the held one is dropped as suppressed, with the reason.
        dropped = await db.tx(store.claim, gone, owner="A",
                              suppress_reason="automation deleted", **kw)
        assert (dropped.kind, dropped.reason) == ("suppressed", store.HELD_DELETED)
        assert await db.run(store.held_count) == 0
        with db.sessions() as s:
            rows = {r.id: (r.status, r.request is None, r.respondent_id is not None)
                    for r in s.execute(select(Invitation)).scalars()}
        assert rows == {req["invitation_id"]: ("sent", True, True),
                        old["invitation_id"]: ("expired", True, False),
                        gone["invitation_id"]: ("suppressed", True, False)}
    finally:
        await db.close()


async def test_consumer_readiness_follows_the_current_assignment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In its group now, not only once (issue 15): a rebalance that does not end, or a
    stopped consumer, is not ready."""
    from aiokafka import AIOKafkaConsumer

    from notifier import consuming

    tc = consuming.TrackedConsumer(bootstrap="127.0.0.1:9", group_id="g", topic="t")
    assert not tc.assigned  # not started
    tc.consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")  # never started
    listener = consuming._Rebalance(tc)
    assert not tc.assigned  # started, no assignment yet
    await listener.on_partitions_assigned(set())
    assert tc.assigned  # in the group, even with no partition
    await listener.on_partitions_revoked(set())
    assert tc.assigned  # a rebalance under way: within its grace
    monkeypatch.setattr(consuming, "REBALANCE_GRACE_S", 0.0)
    assert not tc.assigned  # it did not end: not ready (before, it stayed true for ever)
    await listener.on_partitions_assigned({TopicPartition("t", 0)})
    assert tc.assigned
    await tc.stop()
    assert not tc.assigned
