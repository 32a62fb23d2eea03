"""SQL models of the control plane: surveys, variables, messages, automations, mappings, keys.

Times are stored as naive UTC (SQLite keeps no zone) and always read back as aware UTC.
The automation's `version` goes up with every change and is SQLAlchemy's version counter:
a concurrent writer holding an older version fails instead of overwriting.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql import column, table

from core.sql import UTCDateTime, utcnow


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Survey(Base):
    __tablename__ = "surveys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    variables: Mapped[list[SurveyVariable]] = relationship(
        back_populates="survey", cascade="all, delete-orphan", order_by="SurveyVariable.position")


class SurveyVariable(Base):
    """A background variable of a survey: the only thing data can be mapped onto."""

    __tablename__ = "variables"
    __table_args__ = (UniqueConstraint("survey_id", "name", name="uq_variables_survey_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    survey_id: Mapped[str] = mapped_column(ForeignKey("surveys.id", ondelete="CASCADE"),
                                           index=True)
    name: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))  # text|number|date|boolean|email|choice
    options: Mapped[list[str]] = mapped_column(default=list)  # choice only
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    survey: Mapped[Survey] = relationship(back_populates="variables")


class Message(Base):
    """An invitation e-mail: subject and body with `{{ variable }}` placeholders."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Automation(Base):
    __tablename__ = "automations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    survey_id: Mapped[str] = mapped_column(ForeignKey("surveys.id", ondelete="RESTRICT"),
                                           index=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="RESTRICT"),
                                            index=True)
    email_field: Mapped[str] = mapped_column(String(500))
    fields_mode: Mapped[str] = mapped_column(String(8))  # include|exclude
    fields_paths: Mapped[list[str]] = mapped_column(default=list)
    filters: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    delay_days: Mapped[int] = mapped_column(Integer, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    error_notifications_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    error_recipients: Mapped[list[str]] = mapped_column(default=list)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # --- signed webhooks (issue 16, item 1; migration 0002_signing) ---
    auth_mode: Mapped[str] = mapped_column(String(16), default="key", server_default="key")
    signature_scheme: Mapped[str] = mapped_column(String(16), default="standard",
                                                  server_default="standard")
    # --- end signed webhooks ---
    # invitation rules (issue 16; migration 0003_rules): days an address the survey invited
    # is not invited again (0: no limit), and the send window as the API's JSON (None: any time)
    throttle_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    send_window: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # per-automation ingress limits (issue 13; migration 0004_limits); None: the global setting
    rate_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    rate_burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_body_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)

    # The service bumps `version` itself on every change (also when only a related row,
    # like a key or the survey, changed); the ORM still checks the old value in the UPDATE's
    # WHERE, so a concurrent writer fails instead of overwriting.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}

    survey: Mapped[Survey] = relationship()
    message: Mapped[Message] = relationship()
    mapping: Mapped[list[MappingRow]] = relationship(
        back_populates="automation", cascade="all, delete-orphan", order_by="MappingRow.position")
    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="automation", cascade="all, delete-orphan", order_by="ApiKey.created_at")
    signing_secrets: Mapped[list[SigningSecret]] = relationship(  # signed webhooks
        back_populates="automation", cascade="all, delete-orphan",
        order_by="SigningSecret.created_at")


class MappingRow(Base):
    """One incoming field mapped onto a survey variable, or skipped (variable NULL)."""

    __tablename__ = "mappings"
    __table_args__ = (UniqueConstraint("automation_id", "field", name="uq_mappings_field"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    automation_id: Mapped[str] = mapped_column(
        ForeignKey("automations.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(500))
    variable: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)

    automation: Mapped[Automation] = relationship(back_populates="mapping")


class ApiKey(Base):
    """An integrator key, stored only as its SHA-256; `expires_at` set once rotated out."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    automation_id: Mapped[str] = mapped_column(
        ForeignKey("automations.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)

    automation: Mapped[Automation] = relationship(back_populates="api_keys")


# --- signed webhooks (issue 16, item 1; migration 0002_signing) ---------------------------
class SigningSecret(Base):
    """A webhook signing secret, sealed with HOOKSTREAM_SECRETS_KEY (AES-256-GCM, bound to the
    automation id): HMAC needs the secret itself, so it cannot be stored hashed like a key.
    `expires_at` is set once rotated out."""

    __tablename__ = "signing_secrets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    automation_id: Mapped[str] = mapped_column(
        ForeignKey("automations.id", ondelete="CASCADE"), index=True)
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)

    automation: Mapped[Automation] = relationship(back_populates="signing_secrets")
# --- end signed webhooks -------------------------------------------------------------------


# The notifier owns `automation_errors` (its model and migrations live there); the admin API
# only reads it, through this column list, so the control plane never imports the notifier.
AUTOMATION_ERRORS = table(
    "automation_errors",
    column("id", String), column("automation_id", String), column("kind", String),
    column("detail", Text), column("source", String), column("field", String),
    column("event_id", String), column("record_index", Integer),
    column("invitation_id", String), column("at", UTCDateTime()),
    # the ingress's counts of refused requests (notifier migration 0102_error_counts)
    column("count", Integer), column("since", UTCDateTime()),
)

# The notifier's respondents and invitations, read the same way (the console and the admin
# API's /v1/respondents and /v1/invitations): only the columns those answers need.
RESPONDENTS = table(
    "respondents",
    column("id", Integer), column("survey_id", String), column("email", String),
    column("variables", JSON), column("values_at", UTCDateTime()),
    column("created_at", UTCDateTime()), column("updated_at", UTCDateTime()),
)
INVITATIONS = table(
    "invitations",
    column("id", String), column("automation_id", String), column("survey_id", String),
    column("event_id", String), column("record_index", Integer),
    column("respondent_id", Integer), column("status", String), column("reason", Text),
    column("smtp_code", Integer), column("attempts", Integer),
    column("received_at", UTCDateTime()), column("due_at", UTCDateTime()),
    column("created_at", UTCDateTime()), column("finished_at", UTCDateTime()),
)
