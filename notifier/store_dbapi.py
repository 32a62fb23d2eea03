"""The hot path's claim and finish on the driver's own cursor (sqlite3, psycopg): the same
statements as `notifier.store.claim`/`finish` (the reference, kept and used when
HOOKSTREAM_NOTIFIER_DBAPI_CLAIM is off), without SQLAlchemy's per-statement execution
context, bind and result processors and Row objects: on SQLite a claim took ~285 CPU-µs
through SQLAlchemy and ~70 here (`make bench-notifier-claim`, bench/README.md, issue 17).
A change to one of the two is a change to both.

They run inside `Db.tx`'s transaction on the batch's connection (its DBAPI connection, so the
same transaction); values are converted as SQLAlchemy's types would (timestamps naive UTC,
on SQLite as its DATETIME text; JSON as text), so either path reads the other's rows.
tests/notifier/test_claim_parity.py runs both on the same inputs, on SQLite and PostgreSQL,
and compares results and tables. Driver errors are raised as SQLAlchemy's (an IntegrityError
is a claim race to its caller; a broken connection is invalidated, as `Db._in_tx` expects).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Json
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from core.sql import drop_server_detail
from core.times import aware_utc
from notifier.models import EXPIRED, FINAL, HELD, SENDING, SENT, SUPPRESSED, THROTTLED
from notifier.store import (
    _KINDS,
    HELD_DELETED,
    Hold,
    SendClaim,
    Throttle,
    _expired_reason,
    _streak_ended,
    _throttled_reason,
    expires_at,
    new_row_status,
    new_token,
    respondent_email,
)

_COLUMNS = ("id", "automation_id", "automation_version", "survey_id", "survey_name",
            "event_id", "record_index", "respondent_id", "token", "status", "reason",
            "attempts", "message_id", "outcome_published", "received_at", "due_at",
            "claimed_by", "claimed_at", "created_at", "finished_at", "request")
# Written with ? (sqlite3's paramstyle); psycopg's %s is put in per dialect (no literal %).
_STATEMENTS = {
    "select_invitation": "SELECT token, status, attempts, reason, smtp_code, message_id, "
                         "outcome_published, claimed_by, claimed_at FROM invitations "
                         "WHERE id = ?",
    "reclaim": "UPDATE invitations SET claimed_by = ?, claimed_at = ? "
               "WHERE id = ? AND status = 'sending' AND claimed_at = ?",
    "insert_invitation": f"INSERT INTO invitations ({', '.join(_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(_COLUMNS))})",
    "select_respondent": "SELECT id, variables, values_at FROM respondents "
                         "WHERE survey_id = ? AND email = ?",
    "insert_respondent": "INSERT INTO respondents (survey_id, email, variables, values_at, "
                         "created_at, updated_at, last_invited_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
    "update_respondent": "UPDATE respondents SET variables = ?, values_at = ?, "
                         "updated_at = ?, last_invited_at = ? WHERE id = ?",
    "invite_unless_throttled": "UPDATE respondents SET last_invited_at = ? WHERE id = ? "
                               "AND (last_invited_at IS NULL OR last_invited_at <= ?)",
    "last_invited": "SELECT last_invited_at FROM respondents WHERE id = ?",
    "end_held": "UPDATE invitations SET status = ?, reason = ?, claimed_by = ?, "
                "claimed_at = ?, finished_at = ?, request = NULL, outcome_published = ? "
                "WHERE id = ? AND status = 'held'",
    "resume_held": "UPDATE invitations SET status = 'sending', reason = NULL, claimed_by = ?, "
                   "claimed_at = ?, outcome_published = ? WHERE id = ? AND status = 'held'",
    "set_respondent": "UPDATE invitations SET respondent_id = ? WHERE id = ?",
    "throttle_resumed": "UPDATE invitations SET status = 'throttled', reason = ?, "
                        "finished_at = ?, request = NULL WHERE id = ?",
    "finish": "UPDATE invitations SET status = ?, attempts = ?, reason = ?, smtp_code = ?, "
              "finished_at = ?, request = NULL WHERE id = ? AND status = 'sending'",
    "end_streak": "UPDATE automation_failure_streaks SET consecutive = 0, reset_at = ? "
                  "WHERE automation_id = ? AND consecutive > 0",
}
assert (SENDING, HELD, THROTTLED) == ("sending", "held", "throttled")  # as inlined above


@dataclass(frozen=True)
class _Dialect:
    """A dialect's statements and how its driver takes and gives timestamps and JSON."""

    sql: dict[str, str]
    sqlite: bool

    def ts(self, value: datetime) -> Any:
        """As UTCDateTime binds it: naive UTC; SQLite: the text SQLAlchemy's DATETIME writes
        (fixed width, so the WHERE's comparisons of text order it as time)."""
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(" ", "microseconds") if self.sqlite else value

    def read_ts(self, value: Any) -> datetime:
        if self.sqlite:
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)

    def json(self, value: Any) -> Any:
        return json.dumps(value) if self.sqlite else Json(value)

    def read_json(self, value: Any) -> Any:
        return json.loads(value) if self.sqlite else value


_DIALECTS = {
    "sqlite": _Dialect(_STATEMENTS, sqlite=True),
    "postgresql": _Dialect({k: v.replace("?", "%s") for k, v in _STATEMENTS.items()},
                           sqlite=False),
}
SUPPORTED = frozenset(_DIALECTS)


class _Cursor:
    """The connection's DBAPI cursor; each driver error re-raised as SQLAlchemy's."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.d = _DIALECTS[conn.dialect.name]
        try:
            self.cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        except conn.dialect.loaded_dbapi.Error as exc:  # e.g. closed under us
            raise _translated(conn, "cursor()", exc) from exc

    def run(self, name: str, params: tuple[Any, ...]) -> Any:
        try:
            self.cur.execute(self.d.sql[name], params)
        except self.conn.dialect.loaded_dbapi.Error as exc:
            raise _translated(self.conn, self.d.sql[name], exc) from exc
        return self.cur

    def one(self, name: str, params: tuple[Any, ...]) -> Any:
        cur = self.run(name, params)
        try:
            return cur.fetchone()
        except self.conn.dialect.loaded_dbapi.Error as exc:
            raise _translated(self.conn, self.d.sql[name], exc) from exc


def _translated(conn: Connection, statement: str, exc: Exception) -> DBAPIError:
    """What SQLAlchemy would have raised: its exception class for the driver's (without the
    parameters or PostgreSQL's DETAIL: they may hold an address), the connection invalidated
    when the driver says it is broken."""
    dbapi_conn = conn.connection.dbapi_connection
    gone = conn.dialect.is_disconnect(exc, dbapi_conn, None)  # type: ignore[arg-type]
    err = DBAPIError.instance(statement, None, exc, conn.dialect.loaded_dbapi.Error,
                              hide_parameters=True, connection_invalidated=gone,
                              dialect=conn.dialect)
    drop_server_detail(exc, err)
    if gone:
        conn.invalidate(err)
    return err


def claim(conn: Connection, req: dict[str, Any], *, survey_name: str, owner: str,
          lease: timedelta, message_id: str,
          suppress_reason: str | None = None, throttle: Throttle | None = None,
          hold: Hold | None = None, expiry: timedelta | None = None) -> SendClaim:
    """`notifier.store.claim`, on the driver's cursor (its docstring says what it does)."""
    c = _Cursor(conn)
    d = c.d
    now = datetime.now(UTC)
    iid = req["invitation_id"]
    expired = expiry is not None and now > expires_at(req, expiry)
    row = c.one("select_invitation", (iid,))
    if row is not None:
        (token, status, attempts, reason, smtp_code, msg_id, published, claimed_by,
         claimed_at) = row
        found = SendClaim(kind="final", token=token, status=status, attempts=attempts,
                          reason=reason, smtp_code=smtp_code, message_id=msg_id,
                          outcome_published=bool(published))
        if status in FINAL:
            return found
        if status == HELD:
            return _leave_held(c, req, found, now=now, owner=owner,
                               expired=_expired_reason(expiry) if expired else None,
                               hold=hold, suppress_reason=suppress_reason, throttle=throttle)
        if claimed_by != owner and d.read_ts(claimed_at) > now - lease:
            return replace(found, kind="busy")
        # claimed_at as read: the same value (text on SQLite) the row holds
        taken = c.run("reclaim", (owner, d.ts(now), iid, claimed_at)).rowcount
        return replace(found, kind="reclaimed" if taken == 1 else "busy")
    status, reason, reaches = new_row_status(suppress_reason, hold, expired, expiry)
    respondent_id = None
    if reaches:
        respondent_id, invited_at = _upsert_respondent(c, req, now, throttle)
        if invited_at is not None and throttle is not None:
            status, reason = THROTTLED, _throttled_reason(invited_at, throttle)
    token = new_token()
    ts_now = d.ts(now)
    c.run("insert_invitation", (
        iid, req["automation_id"], req["automation_version"], req["survey_id"],
        survey_name[:200], req["event_id"], req["record_index"], respondent_id, token,
        status, reason, 0, message_id, False, d.ts(aware_utc(req["received_at"])),
        d.ts(aware_utc(req["due_at"])), owner, ts_now, ts_now,
        None if status in (SENDING, HELD) else ts_now,
        hold.request if status == HELD and hold is not None else None))
    return SendClaim(kind=_KINDS[status], token=token, status=status, attempts=0,
                     reason=reason, message_id=message_id)


def _leave_held(c: _Cursor, req: dict[str, Any], found: SendClaim, *, now: datetime,
                owner: str, expired: str | None, hold: Hold | None,
                suppress_reason: str | None, throttle: Throttle | None) -> SendClaim:
    """`notifier.store._leave_held`, on the driver's cursor."""
    status: str
    reason: str | None
    if suppress_reason is not None:
        status, reason = SUPPRESSED, HELD_DELETED
    elif expired is not None:
        status, reason = EXPIRED, expired
    elif hold is not None:
        return replace(found, kind="held")
    else:
        status, reason = SENDING, None
    iid = req["invitation_id"]
    ts_now = c.d.ts(now)
    if status == SENDING:
        taken = c.run("resume_held", (owner, ts_now, False, iid)).rowcount
    else:
        taken = c.run("end_held", (status, reason, owner, ts_now, ts_now, False, iid)).rowcount
    if taken != 1:
        return replace(found, kind="busy")
    if status == SENDING:
        respondent_id, invited_at = _upsert_respondent(c, req, now, throttle)
        c.run("set_respondent", (respondent_id, iid))
        if invited_at is not None and throttle is not None:
            status, reason = THROTTLED, _throttled_reason(invited_at, throttle)
            c.run("throttle_resumed", (reason, ts_now, iid))
    return replace(found, kind=_KINDS[status], status=status, reason=reason,
                   outcome_published=False)


def _upsert_respondent(c: _Cursor, req: dict[str, Any], now: datetime,
                       throttle: Throttle | None) -> tuple[int, datetime | None]:
    """`notifier.store._upsert_respondent`, on the driver's cursor."""
    d = c.d
    email = respondent_email(req["email"])
    received = aware_utc(req["received_at"])
    values = dict(req.get("variables") or {})
    ts_now = d.ts(now)
    row = c.one("select_respondent", (req["survey_id"], email))
    if row is None:
        new = c.one("insert_respondent", (req["survey_id"], email, d.json(values),
                                          d.ts(received), ts_now, ts_now, ts_now))
        return int(new[0]), None
    rid, variables, values_at = row[0], d.read_json(row[1]), d.read_ts(row[2])
    if throttle is not None and c.run("invite_unless_throttled", (
            ts_now, rid, d.ts(now - throttle.window))).rowcount != 1:
        (invited_at,) = c.one("last_invited", (rid,))
        return int(rid), d.read_ts(invited_at) if invited_at is not None else now
    if received >= values_at:
        merged, values_at = {**variables, **values}, received
    else:  # an older invitation arrived late: it only fills keys the row does not have
        merged = {**values, **variables}
    c.run("update_respondent", (d.json(merged), d.ts(values_at), ts_now, ts_now, rid))
    return int(rid), None


def finish(conn: Connection, invitation_id: str, *, status: str, attempts: int,
           reason: str | None = None, smtp_code: int | None = None,
           automation_id: str | None = None) -> None:
    """`notifier.store.finish`, on the driver's cursor."""
    c = _Cursor(conn)
    now = c.d.ts(datetime.now(UTC))
    c.run("finish", (status, attempts, reason, smtp_code, now, invitation_id))
    if status == SENT and automation_id is not None:
        ended = _streak_ended(conn)
        if automation_id not in ended:
            c.run("end_streak", (now, automation_id))
            ended.add(automation_id)
