"""The notifier's SQL tables (it owns them; their migrations are in `notifier/migrations/`).

- `respondents`: one row per (survey, e-mail) with the background data; the values of the
  newest invitation (by `received_at`) win, key by key; and when the survey last invited the
  address (`last_invited_at`, which throttling reads).
- `invitations`: one row per invitation id. Its PRIMARY KEY is what guarantees one mail per
  invitation: a redelivered or replayed invitation finds its row and is not mailed again.
  `token` is the unguessable part of the personal survey link.
- `automation_failure_streaks`: consecutive failures per automation (kept in SQL so a
  restart does not forget them); a sent invitation resets the count.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.sql import UTCDateTime, utcnow

# Invitation status values (the row's life: sending -> sent | failed; or suppressed or
# throttled at once; or held -> sending | expired | suppressed).
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
SUPPRESSED = "suppressed"
THROTTLED = "throttled"  # issue 16: the survey invited the address within throttle_days
# Issue 15: due while its automation was disabled. Not final: sent once the automation is
# enabled again within the hold expiry, else `expired`; dropped (`suppressed`) only when the
# automation is deleted.
HELD = "held"
EXPIRED = "expired"
FINAL = (SENT, FAILED, SUPPRESSED, THROTTLED, EXPIRED)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Respondent(Base):
    __tablename__ = "respondents"
    __table_args__ = (UniqueConstraint("survey_id", "email", name="uq_respondents_survey_email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    survey_id: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(320))  # normalised: trimmed, lower case
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    values_at: Mapped[datetime] = mapped_column()  # received_at of the newest values
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Issue 16 (migration 0103_rules): when the survey last invited this address (the claim of
    # its newest invitation to be mailed). Throttling compares with it in the claim's UPDATE.
    last_invited_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Invitation(Base):
    __tablename__ = "invitations"
    __table_args__ = (Index("ix_invitations_automation_status", "automation_id", "status"),
                      Index("ix_invitations_status_due", "status", "due_at"),
                      UniqueConstraint("token", name="uq_invitations_token"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the invitation id
    automation_id: Mapped[str] = mapped_column(String(64))
    automation_version: Mapped[int] = mapped_column(Integer)
    survey_id: Mapped[str] = mapped_column(String(64))
    survey_name: Mapped[str] = mapped_column(String(200), default="")
    event_id: Mapped[str] = mapped_column(String(64))
    record_index: Mapped[int] = mapped_column(Integer)
    respondent_id: Mapped[int | None] = mapped_column(
        ForeignKey("respondents.id", ondelete="SET NULL"), nullable=True, index=True)
    token: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    smtp_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    outcome_published: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime] = mapped_column()
    due_at: Mapped[datetime] = mapped_column()
    claimed_by: Mapped[str] = mapped_column(String(64))  # the notifier process sending it
    claimed_at: Mapped[datetime] = mapped_column()  # refreshed on every attempt (a lease)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Issue 15 (migration 0104_held): the Avro-encoded InvitationRequested while `held` (what
    # to send once the automation is enabled again); cleared when the row leaves `held`.
    request: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    respondent: Mapped[Respondent | None] = relationship()


class FailureStreak(Base):
    __tablename__ = "automation_failure_streaks"

    automation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    consecutive: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reset_at: Mapped[datetime | None] = mapped_column(nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_alert_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AutomationErrorRow(Base):
    """A failure reported on `automations.errors`; no respondent data. The notifier writes it,
    the admin API reads it.

    No foreign key: errors may name an automation that is unknown or already deleted.
    """

    __tablename__ = "automation_errors"
    __table_args__ = (Index("ix_automation_errors_automation_at", "automation_id", "at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the event's error_id
    automation_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    field: Mapped[str | None] = mapped_column(String(500), nullable=True)
    event_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    record_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    invitation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column()  # for a count: the end of its interval
    # The ingress reports refused requests as counts over an interval (0102_error_counts).
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    since: Mapped[datetime | None] = mapped_column(nullable=True)
