"""The notifier's SQL work: claim an invitation exactly once, record outcomes, keep the
respondents, the automation errors and the failure streaks.

Functions here are synchronous (SQLAlchemy sessions); `Db` runs them off the event loop, on a
single thread for SQLite (one writer at a time, so no lock errors) and a few for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    and_,
    bindparam,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from core.sql import UTCDateTime, make_engine, session_factory
from core.tasks import cancel_and_wait
from core.times import aware_utc
from notifier.models import (
    EXPIRED,
    FINAL,
    HELD,
    SENDING,
    SENT,
    SUPPRESSED,
    THROTTLED,
    AutomationErrorRow,
    FailureStreak,
    Invitation,
    Respondent,
)
from notifier.wal_checkpoint import BACKSTOP_PAGES, WalCheckpointer

T = TypeVar("T")
log = logging.getLogger(__name__)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Db:
    """The notifier's database: `tx` for the hot path (batched), `run` for the rest.

    `tx(fn, ...)` queues `fn(conn, ...)`; one batcher runs everything queued meanwhile in ONE
    transaction on the database thread. At a few hundred invitations a second a commit each
    would be the bottleneck; batched, the cost of a commit is shared. If the batch fails (say,
    a unique-constraint race with another notifier), it is rolled back and every item rerun
    in its own transaction, so one item's error reaches only its caller.

    The batches run on one connection the batcher keeps (one batch at a time, so one
    connection suffices): checking a pooled connection out and back in (with its reset) for
    every batch cost about as much CPU as a claim's statements (bench/README.md, issue 17).
    A connection the driver reports broken (a database restart) is dropped and the batch
    runs again on a fresh one from the pool, which pings it first: what the pool's
    pre-ping did on every checkout before.
    """

    # Small enough that a burst's first claims commit (and their mails start) while later
    # ones still wait: SQL and SMTP overlap instead of running one after the other.
    MAX_BATCH = 64

    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        sqlite = self.engine.dialect.name == "sqlite"
        # SQLite: checkpoints on a thread of their own, not in a batch's commit (see there).
        self._checkpointer = WalCheckpointer(self.engine) if sqlite else None
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # SQLite has one writer at a time: one thread, so no "database is locked" waits.
        self._executor = ThreadPoolExecutor(max_workers=1 if sqlite else 4,
                                            thread_name_prefix="notifier-db")
        self._queue: asyncio.Queue[_Item] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._conn: Connection | None = None  # the batches' (see above); database thread

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(sessions, *args, **kwargs)` on the database thread, on its own."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor,
                                          partial(fn, self.sessions, *args, **kwargs))

    async def tx(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(conn, *args, **kwargs)` inside the next batched transaction."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._batcher = asyncio.create_task(self._batches(), name="notifier-db-batcher")
            if self._checkpointer is not None:
                self._checkpointer.start()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(lambda conn: fn(conn, *args, **kwargs), future))
        return await future

    async def _batches(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            while not self._queue.empty() and len(items) < self.MAX_BATCH:
                items.append(self._queue.get_nowait())
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, items)
            except Exception as exc:  # noqa: BLE001 - e.g. the database is away: tell each caller
                results = [(False, exc)] * len(items)
            if self._checkpointer is not None:
                self._checkpointer.written()
            for item, (ok, value) in zip(items, results, strict=True):
                if item.future.done():
                    continue  # its caller was cancelled
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)

    def _run_batch(self, items: list[_Item]) -> list[tuple[bool, Any]]:
        try:
            return [(True, value) for value in self._in_tx(items)]
        except Exception as exc:  # noqa: BLE001 - rolled back: rerun one by one (below)
            if len(items) == 1:
                raise
            log.debug("a batch of %d failed (%s); each item again on its own", len(items),
                      type(exc).__name__)
        out: list[tuple[bool, Any]] = []
        for item in items:
            try:
                out.append((True, self._in_tx([item])[0]))
            except Exception as exc:  # noqa: BLE001 - reported to this item's caller
                out.append((False, exc))
        return out

    def _in_tx(self, items: list[_Item]) -> list[Any]:
        """The items' results, in one transaction on the kept connection; once more on a
        fresh connection when the kept one turned out broken (nothing was committed)."""
        for fresh in (False, True):
            if self._conn is None:
                self._conn = self.engine.connect()
            conn = self._conn
            try:
                with conn.begin():
                    _new_transaction(conn)
                    return [item.fn(conn) for item in items]
            except DBAPIError as exc:
                if not exc.connection_invalidated and not conn.invalidated:
                    raise
                self._drop_connection()
                if fresh:
                    raise
                log.info("the database connection broke (%s); once more on a new one",
                         type(exc.orig).__name__)
        raise AssertionError("unreachable")

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except DBAPIError as exc:  # it was broken already; the pool discards it
                log.debug("closing a broken database connection: %s", type(exc).__name__)

    async def close(self) -> None:
        await cancel_and_wait(self._batcher)
        self._executor.shutdown(wait=True)  # no batch runs any more: the connection is free
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
        self._drop_connection()
        self.engine.dispose()


@dataclass
class _Item:
    fn: Callable[[Connection], Any]
    future: asyncio.Future[Any]


# Automations whose failure streak this transaction already ended (and nothing lengthened
# since): a batch of a hundred sent invitations of one automation ends it once, not 100 times.
_STREAK_ENDED = "hookstream_streak_ended"


def _new_transaction(conn: Connection) -> None:
    conn.info[_STREAK_ENDED] = set()


def _streak_ended(conn: Connection) -> set[str]:
    return conn.info.setdefault(_STREAK_ENDED, set())


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL + synchronous=NORMAL: a commit survives a crash of any process; only a power loss
    # can lose the newest ones. PostgreSQL (production) keeps full durability.
    # Checkpoints run on their own thread (notifier.wal_checkpoint); a commit only past this.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
    cur.close()


def respondent_email(address: str) -> str:
    """The address a respondent is kept under. The worker has already validated and
    normalised it (`automations.coerce.normalize_email`: trimmed, domain lower-cased, local
    part as given); the respondent's key lower-cases the local part too, so Bob@ and bob@ of
    one survey are one respondent."""
    return address.lower()


def new_token() -> str:
    return secrets.token_urlsafe(24)  # 192 random bits: unguessable


@dataclass(frozen=True)
class SendClaim:
    """Whether this process may send an invitation, as the invitation's row says:
    `new`/`reclaimed` (this process sends it), `final` (decided before: a duplicate), `busy`
    (another sender holds a live lease), `suppressed`, `throttled`, `held` or `expired` (just
    recorded so; `held` also when it already was)."""

    kind: Literal["new", "reclaimed", "final", "busy", "suppressed", "throttled", "held",
                  "expired"]
    token: str
    status: str
    attempts: int
    reason: str | None = None
    smtp_code: int | None = None
    message_id: str | None = None
    outcome_published: bool = False


INV = Invitation.__table__
RESP = Respondent.__table__
STREAK = FailureStreak.__table__

# The hot path's statements, built once: building and cache-keying a statement per call cost
# more CPU than running it. Bind names start with b_ (UPDATE reserves the column names).
_TS = UTCDateTime()
_SELECT_INVITATION = select(
    INV.c.token, INV.c.status, INV.c.attempts, INV.c.reason, INV.c.smtp_code,
    INV.c.message_id, INV.c.outcome_published, INV.c.claimed_by, INV.c.claimed_at,
).where(INV.c.id == bindparam("b_id"))
_RECLAIM = (update(INV).where(INV.c.id == bindparam("b_id"), INV.c.status == SENDING,
                              INV.c.claimed_at == bindparam("b_old", type_=_TS))
            .values(claimed_by=bindparam("b_owner"), claimed_at=bindparam("b_now", type_=_TS)))
_INSERT_INVITATION = insert(INV)
_SELECT_RESPONDENT = select(RESP.c.id, RESP.c.variables, RESP.c.values_at).where(
    RESP.c.survey_id == bindparam("b_survey"), RESP.c.email == bindparam("b_email"))
_INSERT_RESPONDENT = insert(RESP)
_UPDATE_RESPONDENT = update(RESP).where(RESP.c.id == bindparam("b_id")).values(
    variables=bindparam("b_vars", type_=JSON()), values_at=bindparam("b_at", type_=_TS),
    updated_at=bindparam("b_now", type_=_TS), last_invited_at=bindparam("b_now", type_=_TS))
# Throttling (issue 16): the respondent may be invited only if the survey did not invite it
# since the cutoff, and then it is, in one conditional UPDATE. PostgreSQL re-checks the WHERE
# of an UPDATE that waited for another transaction's row lock against the row that one
# committed (read committed), and SQLite has one writer at a time, so of two notifiers that
# claim the same address at once exactly one gets the row: exact across replicas and restarts.
_INVITE_UNLESS_THROTTLED = (
    update(RESP).where(RESP.c.id == bindparam("b_id"),
                       or_(RESP.c.last_invited_at.is_(None),
                           RESP.c.last_invited_at <= bindparam("b_cutoff", type_=_TS)))
    .values(last_invited_at=bindparam("b_now", type_=_TS)))
_LAST_INVITED = select(RESP.c.last_invited_at).where(RESP.c.id == bindparam("b_id"))
_TOUCH = (update(INV).where(INV.c.id == bindparam("b_id"), INV.c.status == SENDING)
          .values(claimed_by=bindparam("b_owner"), claimed_at=bindparam("b_now", type_=_TS),
                  attempts=bindparam("b_attempts")))
_FINISH = (update(INV).where(INV.c.id == bindparam("b_id"), INV.c.status == SENDING)
           .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"),
                   reason=bindparam("b_reason"), smtp_code=bindparam("b_code"),
                   finished_at=bindparam("b_now", type_=_TS), request=None))
_END_STREAK = (update(STREAK).where(STREAK.c.automation_id == bindparam("b_automation"),
                                    STREAK.c.consecutive > 0)
               .values(consecutive=0, reset_at=bindparam("b_now", type_=_TS)))
_PUBLISHED = (update(INV).where(INV.c.id.in_(bindparam("b_ids", expanding=True)))
              .values(outcome_published=True))
# Issue 15: a held row leaves `held` in one conditional UPDATE, so of two notifiers that
# sweep it at once exactly one sends it (as for throttling, below). One sent on keeps its
# request until it is final: if this notifier dies mid-send, no Kafka record is left to
# bring it back, and the sweep takes it over once its lease has run out.
_HELD_ROW = (INV.c.id == bindparam("b_id"), INV.c.status == HELD)
_END_HELD = (update(INV).where(*_HELD_ROW)
             .values(status=bindparam("b_status"), reason=bindparam("b_reason"),
                     claimed_by=bindparam("b_owner"), claimed_at=bindparam("b_now", type_=_TS),
                     finished_at=bindparam("b_now", type_=_TS), request=None,
                     outcome_published=False))
_RESUME_HELD = (update(INV).where(*_HELD_ROW)
                .values(status=SENDING, reason=None, claimed_by=bindparam("b_owner"),
                        claimed_at=bindparam("b_now", type_=_TS), outcome_published=False))
_SET_RESPONDENT = (update(INV).where(INV.c.id == bindparam("b_id"))
                   .values(respondent_id=bindparam("b_respondent")))
_THROTTLE_RESUMED = (update(INV).where(INV.c.id == bindparam("b_id"))
                     .values(status=THROTTLED, reason=bindparam("b_reason"),
                             finished_at=bindparam("b_now", type_=_TS), request=None))


@dataclass(frozen=True)
class Throttle:
    """An automation's throttling rule (issue 16): not again to an address its survey invited
    within `days` (`window` long: days of HOOKSTREAM_DAY_SECONDS)."""

    days: int
    window: timedelta


@dataclass(frozen=True)
class Hold:
    """Issue 15: the automation is disabled. The invitation waits (`held`, its request kept)
    unless it is past `expires_at` (its due time plus the hold expiry): then `expired`."""

    reason: str
    request: bytes  # the Avro-encoded InvitationRequested, sent as is once enabled again


HELD_DELETED = "automation deleted while the invitation was held"


def expires_at(req: dict[str, Any], expiry: timedelta) -> datetime:
    return aware_utc(req["due_at"]) + expiry


def claim(conn: Connection, req: dict[str, Any], *, survey_name: str, owner: str,
          lease: timedelta, message_id: str,
          suppress_reason: str | None = None, throttle: Throttle | None = None,
          hold: Hold | None = None, expiry: timedelta | None = None) -> SendClaim:
    """Insert the invitation's row (the exactly-once guard) or report what it already says.

    A row left `sending` by a sender whose lease ran out (a crashed process) is taken over;
    one left by this very process (`owner`) too, since it is no longer being worked on here.
    A concurrent insert by another notifier surfaces as IntegrityError (caller retries).
    A new invitation under a `throttle` whose address the survey invited within its window
    is recorded `throttled` (final: never mailed), in the same transaction.
    Under a `hold` (automation disabled) a new invitation is recorded `held`; a `held` row
    stays so under a hold, is `suppressed` under a `suppress_reason` (deleted), and is
    otherwise (enabled again) claimed for sending like a new one; past its due time plus
    `expiry` a held invitation ends `expired` instead.

    `store_dbapi.claim` (the notifier's default) is this on the driver's cursor: a change
    here is a change there (tests/notifier/test_claim_parity.py holds them equal).
    """
    now = datetime.now(UTC)
    iid = req["invitation_id"]
    expired = expiry is not None and now > expires_at(req, expiry)
    row = conn.execute(_SELECT_INVITATION, {"b_id": iid}).first()
    if row is not None:
        found = SendClaim(kind="final", token=row.token, status=row.status,
                          attempts=row.attempts, reason=row.reason, smtp_code=row.smtp_code,
                          message_id=row.message_id, outcome_published=row.outcome_published)
        if row.status in FINAL:
            return found
        if row.status == HELD:
            return _leave_held(conn, req, found, now=now, owner=owner,
                               expired=_expired_reason(expiry) if expired else None,
                               hold=hold, suppress_reason=suppress_reason, throttle=throttle)
        if row.claimed_by != owner and row.claimed_at > now - lease:
            return replace(found, kind="busy")
        taken = conn.execute(_RECLAIM, {"b_id": iid, "b_old": row.claimed_at,
                                        "b_owner": owner, "b_now": now}).rowcount
        return replace(found, kind="reclaimed" if taken == 1 else "busy")
    status, reason, reaches = new_row_status(suppress_reason, hold, expired, expiry)
    respondent_id = None
    if reaches:
        respondent_id, invited_at = _upsert_respondent(conn, req, now, throttle)
        if invited_at is not None and throttle is not None:
            status, reason = THROTTLED, _throttled_reason(invited_at, throttle)
    token = new_token()
    conn.execute(_INSERT_INVITATION, {
        "id": iid, "automation_id": req["automation_id"],
        "automation_version": req["automation_version"], "survey_id": req["survey_id"],
        "survey_name": survey_name[:200], "event_id": req["event_id"],
        "record_index": req["record_index"], "respondent_id": respondent_id, "token": token,
        "status": status, "reason": reason, "attempts": 0, "message_id": message_id,
        "outcome_published": False, "received_at": aware_utc(req["received_at"]),
        "due_at": aware_utc(req["due_at"]), "claimed_by": owner, "claimed_at": now,
        "created_at": now, "finished_at": None if status in (SENDING, HELD) else now,
        "request": hold.request if status == HELD and hold is not None else None})
    kind = _KINDS[status]
    return SendClaim(kind=kind, token=token, status=status, attempts=0, reason=reason,
                     message_id=message_id)


_KINDS: dict[str, Literal["new", "suppressed", "throttled", "held", "expired"]] = {
    SENDING: "new", SUPPRESSED: "suppressed", THROTTLED: "throttled", HELD: "held",
    EXPIRED: "expired"}


def new_row_status(suppress_reason: str | None, hold: Hold | None, expired: bool,
                   expiry: timedelta | None) -> tuple[str, str | None, bool]:
    """A new invitation's status and reason, and whether it reaches its respondent (who is
    then upserted, and may turn it into `throttled`). Shared by `claim` and its fast twin."""
    if suppress_reason is not None:
        return SUPPRESSED, suppress_reason, False
    if hold is not None:
        return (EXPIRED, _expired_reason(expiry), False) if expired else (HELD, hold.reason, False)
    return SENDING, None, True


def _throttled_reason(invited_at: datetime, throttle: Throttle) -> str:
    return (f"throttled: the survey invited this address at {invited_at:%Y-%m-%d %H:%M:%S} "
            f"UTC, within the automation's {throttle.days} day(s)")


def _expired_reason(expiry: timedelta | None) -> str:
    return (f"expired: held while the automation was disabled, not enabled again within "
            f"{expiry} of the due time")


def _leave_held(conn: Connection, req: dict[str, Any], found: SendClaim, *, now: datetime,
                owner: str, expired: str | None, hold: Hold | None,
                suppress_reason: str | None, throttle: Throttle | None) -> SendClaim:
    """A held row seen again (the sweep, a replay): what becomes of it now."""
    status: str
    reason: str | None
    if suppress_reason is not None:
        status, reason = SUPPRESSED, HELD_DELETED
    elif expired is not None:
        status, reason = EXPIRED, expired
    elif hold is not None:
        return replace(found, kind="held")  # still disabled: it waits on
    else:
        status, reason = SENDING, None
    iid = req["invitation_id"]
    if status == SENDING:
        taken = conn.execute(_RESUME_HELD, {"b_id": iid, "b_owner": owner, "b_now": now})
    else:
        taken = conn.execute(_END_HELD, {"b_id": iid, "b_status": status, "b_reason": reason,
                                         "b_owner": owner, "b_now": now})
    if taken.rowcount != 1:
        return replace(found, kind="busy")  # another notifier took it meanwhile: look again
    if status == SENDING:  # enabled again: from here on like a new invitation
        respondent_id, invited_at = _upsert_respondent(conn, req, now, throttle)
        conn.execute(_SET_RESPONDENT, {"b_id": iid, "b_respondent": respondent_id})
        if invited_at is not None and throttle is not None:
            status, reason = THROTTLED, _throttled_reason(invited_at, throttle)
            conn.execute(_THROTTLE_RESUMED, {"b_id": iid, "b_reason": reason, "b_now": now})
    return replace(found, kind=_KINDS[status], status=status, reason=reason,
                   outcome_published=False)


def _upsert_respondent(conn: Connection, req: dict[str, Any], now: datetime,
                       throttle: Throttle | None = None) -> tuple[int, datetime | None]:
    """The respondent's row with this invitation's background values merged in (key by key,
    the values of the invitation received last win), marked invited now. Under a `throttle`,
    when the survey invited the address within its window, nothing changes and the time of
    that invitation comes back as the second value (None: invited now)."""
    email = respondent_email(req["email"])
    received = aware_utc(req["received_at"])
    values = dict(req.get("variables") or {})
    row = conn.execute(_SELECT_RESPONDENT, {"b_survey": req["survey_id"],
                                            "b_email": email}).first()
    if row is None:
        result = conn.execute(_INSERT_RESPONDENT, {
            "survey_id": req["survey_id"], "email": email, "variables": values,
            "values_at": received, "created_at": now, "updated_at": now,
            "last_invited_at": now})
        return int(result.inserted_primary_key[0]), None
    if throttle is not None and conn.execute(_INVITE_UNLESS_THROTTLED, {
            "b_id": row.id, "b_cutoff": now - throttle.window, "b_now": now}).rowcount != 1:
        invited_at = conn.execute(_LAST_INVITED, {"b_id": row.id}).scalar()
        return int(row.id), aware_utc(invited_at) if invited_at is not None else now
    if received >= row.values_at:
        merged, values_at = {**row.variables, **values}, received
    else:  # an older invitation arrived late: it only fills keys the row does not have
        merged, values_at = {**values, **row.variables}, row.values_at
    conn.execute(_UPDATE_RESPONDENT, {"b_id": row.id, "b_vars": merged, "b_at": values_at,
                                      "b_now": now})
    return int(row.id), None


def touch(conn: Connection, invitation_id: str, owner: str, attempts: int) -> None:
    """Renew the lease before an attempt and count it."""
    conn.execute(_TOUCH, {"b_id": invitation_id, "b_owner": owner,
                          "b_now": datetime.now(UTC), "b_attempts": attempts})


def finish(conn: Connection, invitation_id: str, *, status: str, attempts: int,
           reason: str | None = None, smtp_code: int | None = None,
           automation_id: str | None = None) -> None:
    """Record the final status; a sent invitation also ends its automation's failure streak.
    `store_dbapi.finish` is its twin, as for `claim`."""
    now = datetime.now(UTC)
    conn.execute(_FINISH, {"b_id": invitation_id, "b_status": status, "b_attempts": attempts,
                           "b_reason": reason, "b_code": smtp_code, "b_now": now})
    if status == SENT and automation_id is not None:
        ended = _streak_ended(conn)
        if automation_id not in ended:
            conn.execute(_END_STREAK, {"b_automation": automation_id, "b_now": now})
            ended.add(automation_id)


def mark_published(conn: Connection, invitation_ids: Iterable[str]) -> None:
    ids = list(invitation_ids)
    for i in range(0, len(ids), 500):
        conn.execute(_PUBLISHED, {"b_ids": ids[i:i + 500]})


@dataclass(frozen=True)
class HeldRow:
    invitation_id: str
    automation_id: str
    due_at: datetime
    request: bytes


def held(sessions: sessionmaker[Session], *, disabled: Iterable[str], cutoff: datetime,
         lease: timedelta, limit: int) -> list[HeldRow]:
    """The sweep's work, the longest due first: held invitations whose automation is not
    `disabled` (enabled again or deleted) or that were due before `cutoff` (expired); and
    formerly held ones whose sender's lease ran out mid-send (they keep their request)."""
    off = list(disabled)
    is_held = Invitation.status == HELD
    if off:
        is_held = and_(is_held, or_(Invitation.automation_id.not_in(off),
                                    Invitation.due_at < cutoff))
    orphaned = and_(Invitation.status == SENDING, Invitation.request.is_not(None),
                    Invitation.claimed_at < datetime.now(UTC) - lease)
    q = select(Invitation.id, Invitation.automation_id, Invitation.due_at,
               Invitation.request).where(or_(is_held, orphaned))
    with sessions() as s:
        rows = s.execute(q.order_by(Invitation.due_at).limit(limit)).all()
    return [HeldRow(r.id, r.automation_id, aware_utc(r.due_at), r.request or b"")
            for r in rows]


def held_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.execute(select(func.count()).select_from(Invitation)
                             .where(Invitation.status == HELD)).scalar() or 0)


def release_claims(sessions: sessionmaker[Session], owner: str) -> int:
    """On a clean stop: let the next owner take over at once what this process did not finish."""
    with sessions() as s:
        n = s.execute(update(Invitation).where(Invitation.status == SENDING,
                                               Invitation.claimed_by == owner)
                      .values(claimed_at=EPOCH)).rowcount
        s.commit()
        return n


@dataclass(frozen=True)
class Page:
    survey_name: str
    email: str


def page_for_token(sessions: sessionmaker[Session], token: str) -> Page | None:
    """What the personal link shows; None when no mail carried this token."""
    with sessions() as s:
        row = s.execute(select(Invitation.survey_name, Invitation.status, Respondent.email)
                        .join(Respondent, Respondent.id == Invitation.respondent_id)
                        .where(Invitation.token == token)).first()
    if row is None or row.status not in ("sent", SENDING):
        return None
    return Page(survey_name=row.survey_name, email=row.email)


# --- automation errors and failure streaks -------------------------------------------------

@dataclass(frozen=True)
class Recorded:
    new: bool  # False: this error_id was recorded before (a redelivery)
    consecutive: int  # the automation's failure streak after this error


ERRORS = AutomationErrorRow.__table__
_ERROR_EXISTS = select(ERRORS.c.id).where(ERRORS.c.id == bindparam("b_id"))
_INSERT_ERROR = insert(ERRORS)
_SELECT_STREAK = select(STREAK.c.consecutive).where(
    STREAK.c.automation_id == bindparam("b_automation"))
_INSERT_STREAK = insert(STREAK)
_LENGTHEN_STREAK = (update(STREAK).where(STREAK.c.automation_id == bindparam("b_automation"))
                    .values(consecutive=STREAK.c.consecutive + 1,
                            last_failure_at=bindparam("b_now", type_=_TS),
                            last_kind=bindparam("b_kind")))


def record_error(conn: Connection, err: dict[str, Any], *, counts: bool) -> Recorded:
    """Store the error (idempotent by error_id) and, when it `counts`, lengthen the streak.
    Runs in the batched transaction (`Db.tx`): a flood of errors costs few commits."""
    now = datetime.now(UTC)
    automation = {"b_automation": err["automation_id"]}
    if conn.execute(_ERROR_EXISTS, {"b_id": err["error_id"]}).first() is not None:
        streak = conn.execute(_SELECT_STREAK, automation).scalar()
        return Recorded(False, streak or 0)
    conn.execute(_INSERT_ERROR, {
        "id": err["error_id"], "automation_id": err["automation_id"], "kind": err["kind"],
        "detail": err["detail"], "source": err["source"], "field": err.get("field"),
        "event_id": err.get("event_id"), "record_index": err.get("record_index"),
        "invitation_id": err.get("invitation_id"), "at": aware_utc(err["at"]),
        "count": err.get("count") or 1,
        "since": None if err.get("since") is None else aware_utc(err["since"])})
    _streak_ended(conn).discard(err["automation_id"])  # a success after this ends it again
    streak = conn.execute(_SELECT_STREAK, automation).scalar()
    if streak is None:
        conn.execute(_INSERT_STREAK, {
            "automation_id": err["automation_id"], "consecutive": 1 if counts else 0,
            "last_failure_at": now if counts else None,
            "last_kind": err["kind"] if counts else None})
        return Recorded(True, 1 if counts else 0)
    if counts:
        conn.execute(_LENGTHEN_STREAK, {**automation, "b_now": now, "b_kind": err["kind"]})
        streak += 1
    return Recorded(True, streak)


def mark_disabled(sessions: sessionmaker[Session], automation_id: str) -> None:
    """The automation was disabled: its streak starts again from zero once re-enabled."""
    now = datetime.now(UTC)
    with sessions() as s:
        s.execute(update(FailureStreak).where(FailureStreak.automation_id == automation_id)
                  .values(consecutive=0, disabled_at=now, reset_at=now))
        s.commit()


def last_alert_at(sessions: sessionmaker[Session], automation_id: str) -> datetime | None:
    with sessions() as s:
        streak = s.get(FailureStreak, automation_id)
        return streak.last_alert_at if streak else None


def set_last_alert_at(sessions: sessionmaker[Session], automation_id: str,
                      at: datetime) -> None:
    with sessions() as s:
        streak = s.get(FailureStreak, automation_id)
        if streak is None:
            s.add(FailureStreak(automation_id=automation_id, consecutive=0, last_alert_at=at))
        else:
            streak.last_alert_at = at
        s.commit()
