"""Paginated, filterable reads for the admin API's lists and the console (keyset pagination).

Every list is ordered by a unique key (creation time, then id); a page ends with an opaque
`next_cursor` naming the last row's key, and the next page starts after it. Unlike offsets,
a cursor stays right while rows are added, and each page costs an index range scan.

The notifier's tables (`respondents`, `invitations`, `automation_errors`) are read through
column lists (`store/models.py`) and may not exist yet (the notifier creates them): their
lists are then empty.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import Select, and_, func, inspect, literal, null, or_, select
from sqlalchemy.orm import Session

from control_plane.errors import Invalid, Problem
from control_plane.service import get_automation
from control_plane.store.models import (
    AUTOMATION_ERRORS,
    INVITATIONS,
    RESPONDENTS,
    Automation,
    Message,
    Survey,
)

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
INVITATION_STATUSES = ("sending", "sent", "failed", "suppressed", "throttled", "held",
                       "expired")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key), default=str)).decode().rstrip("=")


def decode_cursor(cursor: str | None, types: Sequence[type]) -> list[Any] | None:
    """The key a cursor names, each part converted to `types`; 422 when it is not ours."""
    if not cursor:
        return None
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(types):
            raise ValueError("wrong shape")
        return [datetime.fromisoformat(v) if t is datetime else t(v)
                for v, t in zip(raw, types, strict=True)]
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise Invalid([Problem("cursor", "is not a cursor from a previous page",
                               "bad_cursor")]) from None


def _has(s: Session, name: str) -> bool:
    return inspect(s.connection()).has_table(name)


def _after_created(q: Select[Any], created: Any, ident: Any, cursor: str | None,
                   id_type: type = str) -> Select[Any]:
    key = decode_cursor(cursor, (datetime, id_type))
    if key is None:
        return q
    at, last = key
    return q.where(or_(created > at, and_(created == at, ident > last)))


def _page(rows: list[T], limit: int, key: Any) -> Page[T]:
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, encode_cursor(*key(rows[-1])))
    return Page(rows, None)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


# --- the control plane's own lists ---------------------------------------------------------
def surveys(s: Session, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
            name: str | None = None) -> Page[Survey]:
    q = select(Survey).order_by(Survey.created_at, Survey.id)
    if name:
        q = q.where(func.lower(Survey.name).like(_like(name), escape="\\"))
    q = _after_created(q, Survey.created_at, Survey.id, cursor)
    return _page(list(s.scalars(q.limit(limit + 1))), limit, lambda x: (x.created_at, x.id))


def messages(s: Session, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
             name: str | None = None) -> Page[Message]:
    q = select(Message).order_by(Message.created_at, Message.id)
    if name:
        q = q.where(func.lower(Message.name).like(_like(name), escape="\\"))
    q = _after_created(q, Message.created_at, Message.id, cursor)
    return _page(list(s.scalars(q.limit(limit + 1))), limit, lambda x: (x.created_at, x.id))


def automations(s: Session, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
                survey_id: str | None = None, enabled: bool | None = None,
                name: str | None = None) -> Page[Automation]:
    q = select(Automation).order_by(Automation.created_at, Automation.id)
    if survey_id is not None:
        q = q.where(Automation.survey_id == survey_id)
    if enabled is not None:
        q = q.where(Automation.enabled == enabled)
    if name:
        q = q.where(func.lower(Automation.name).like(_like(name), escape="\\"))
    q = _after_created(q, Automation.created_at, Automation.id, cursor)
    return _page(list(s.scalars(q.limit(limit + 1))), limit, lambda x: (x.created_at, x.id))


# --- the notifier's tables, read through column lists --------------------------------------
def _error_columns(s: Session) -> list[Any]:
    """The columns of `automation_errors` to select: `count` and `since` (the ingress's counts,
    notifier migration 0102_error_counts) read as 1 and null from a notifier not yet there."""
    present = {c["name"] for c in inspect(s.connection()).get_columns(AUTOMATION_ERRORS.name)}
    e = AUTOMATION_ERRORS.c
    out: list[Any] = [c for c in e if c.name not in ("count", "since")]
    out.append(e.count if "count" in present else literal(1).label("count"))
    out.append(e.since if "since" in present else null().label("since"))
    return out


def errors(s: Session, automation_id: str, *, limit: int = DEFAULT_LIMIT,
           cursor: str | None = None, kind: str | None = None) -> Page[Any]:
    """An automation's errors, newest first (the ingress's counts of refused requests among
    them, one row per interval with its `count`)."""
    get_automation(s, automation_id)
    key = decode_cursor(cursor, (datetime, str))
    if not _has(s, AUTOMATION_ERRORS.name):
        return Page([], None)
    e = AUTOMATION_ERRORS.c
    q = select(*_error_columns(s)).where(e.automation_id == automation_id) \
        .order_by(e.at.desc(), e.id.desc())
    if kind:
        q = q.where(e.kind == kind)
    if key is not None:
        q = q.where(or_(e.at < key[0], and_(e.at == key[0], e.id < key[1])))
    return _page(list(s.execute(q.limit(limit + 1)).all()), limit, lambda r: (r.at, r.id))


def error_kinds(s: Session, automation_id: str, since: datetime) -> list[tuple[str, int, Any]]:
    """(kind, count, newest error of that kind) since `since`, most frequent first."""
    if not _has(s, AUTOMATION_ERRORS.name):
        return []
    e = AUTOMATION_ERRORS.c
    columns = _error_columns(s)
    # A row of the ingress's counts stands for `count` refused requests.
    n_of = func.sum(func.coalesce(columns[-2], 1))
    counts = s.execute(select(e.kind, n_of, func.max(e.at))
                       .where(e.automation_id == automation_id, e.at >= since)
                       .group_by(e.kind).order_by(n_of.desc(), e.kind)).all()
    out = []
    for kind, n, _newest in counts:
        example = s.execute(select(*columns).where(
            e.automation_id == automation_id, e.kind == kind).order_by(e.at.desc())
            .limit(1)).first()
        out.append((kind, int(n), example))
    return out


def normalize_email(email: str) -> str:
    """As the notifier stores it: trimmed, lower case."""
    return email.strip().lower()


def respondents(s: Session, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
                survey_id: str | None = None, email: str | None = None) -> Page[Any]:
    key = decode_cursor(cursor, (int,))
    if not _has(s, RESPONDENTS.name):
        return Page([], None)
    r = RESPONDENTS.c
    q = select(RESPONDENTS).order_by(r.id)
    if survey_id is not None:
        q = q.where(r.survey_id == survey_id)
    if email:
        q = q.where(r.email == normalize_email(email))
    if key is not None:
        q = q.where(r.id > key[0])
    return _page(list(s.execute(q.limit(limit + 1)).all()), limit, lambda x: (x.id,))


def invitations(s: Session, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
                automation_id: str | None = None, survey_id: str | None = None,
                email: str | None = None, status: str | None = None) -> Page[Any]:
    """Invitations the notifier has taken on (due ones), newest first, with the e-mail."""
    key = decode_cursor(cursor, (datetime, str))
    if not (_has(s, INVITATIONS.name) and _has(s, RESPONDENTS.name)):
        return Page([], None)
    i, r = INVITATIONS.c, RESPONDENTS.c
    q = (select(INVITATIONS, r.email)
         .select_from(INVITATIONS.outerjoin(RESPONDENTS, r.id == i.respondent_id))
         .order_by(i.created_at.desc(), i.id.desc()))
    if automation_id is not None:
        q = q.where(i.automation_id == automation_id)
    if survey_id is not None:
        q = q.where(i.survey_id == survey_id)
    if email:
        q = q.where(r.email == normalize_email(email))
    if status is not None:
        q = q.where(i.status == status)
    if key is not None:
        q = q.where(or_(i.created_at < key[0], and_(i.created_at == key[0], i.id < key[1])))
    return _page(list(s.execute(q.limit(limit + 1)).all()), limit,
                 lambda x: (x.created_at, x.id))


def mail_counts(s: Session, automation_id: str, since: datetime) -> dict[str, int]:
    """Invitations finished since `since`, by status (sent, failed, suppressed, throttled)."""
    if not _has(s, INVITATIONS.name):
        return {}
    i = INVITATIONS.c
    rows = s.execute(select(i.status, func.count()).where(
        i.automation_id == automation_id, i.finished_at >= since).group_by(i.status)).all()
    return {status: int(n) for status, n in rows}


def held_count(s: Session, automation_id: str) -> int:
    """The automation's invitations held now (issue 15: due while it was disabled)."""
    if not _has(s, INVITATIONS.name):
        return 0
    i = INVITATIONS.c
    return int(s.execute(select(func.count()).select_from(INVITATIONS).where(
        i.automation_id == automation_id, i.status == "held")).scalar() or 0)


def day_ago(now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(hours=24)
