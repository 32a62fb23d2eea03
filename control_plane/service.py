"""The control plane's operations on the SQL store: create, change, delete, with validation.

Each function works inside one session (the caller commits, see `store/unit.py`) and
returns, besides its result, the `Changes` to publish on the config topic after the commit.
Any change that alters what an automation's snapshot holds (its survey's name or variables,
its message) bumps that automation's version and republishes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, inspect, select
from sqlalchemy.orm import Session

from automations import keys, signing
from automations.snapshot import AutomationSnapshot
from control_plane import api_models as m
from control_plane.errors import Conflict, Invalid, NotFound, Problem
from control_plane.save_checks import check_snapshot
from control_plane.snapshots import build_snapshot
from control_plane.store.models import (
    AUTOMATION_ERRORS,
    ApiKey,
    Automation,
    MappingRow,
    Message,
    SigningSecret,
    Survey,
    SurveyVariable,
    new_id,
)

T = TypeVar("T")


@dataclass
class Changes:
    """What to put on the config topic once the transaction is committed."""

    publish: list[AutomationSnapshot] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def _get(s: Session, model: type[T], id_: str, what: str) -> T:
    row = s.get(model, id_)
    if row is None:
        raise NotFound(f"there is no {what} with id {id_!r}")
    return row


def _ref(s: Session, model: type[T], id_: str, field_name: str, what: str) -> T:
    """A row the input refers to: its absence is invalid input (422), not an unknown URL."""
    row = s.get(model, id_)
    if row is None:
        raise Invalid([Problem(field_name, f"there is no {what} with id {id_!r}", "unknown_ref")])
    return row


def _automations_of_survey(s: Session, survey_id: str) -> list[Automation]:
    return list(s.scalars(select(Automation).where(Automation.survey_id == survey_id)
                          .order_by(Automation.created_at)))


def _automations_of_message(s: Session, message_id: str) -> list[Automation]:
    return list(s.scalars(select(Automation).where(Automation.message_id == message_id)
                          .order_by(Automation.created_at)))


def _refresh(s: Session, automations: Iterable[Automation], now: datetime, *,
             primary: Automation | None = None,
             others: type[Invalid] | type[Conflict] = Conflict) -> Changes:
    """Bump the version of each automation, check its new snapshot, and list it to publish.

    A problem in `primary` (the automation being saved) is the caller's invalid input (422);
    in any other automation it means this change would break that one (`others`).
    """
    automations = list(automations)
    for a in automations:
        a.version += 1
        a.updated_at = now
    s.flush()
    changes = Changes()
    for a in automations:
        snap = build_snapshot(a)
        problems = check_snapshot(snap)
        if problems and a is primary:
            raise Invalid(problems)
        if problems:
            p = problems[0]
            detail = (f"this change would make automation {a.name!r} ({a.id}) invalid: "
                      f"{p.field}: {p.reason}")
            if others is Conflict:
                raise Conflict(detail, problems)
            raise Invalid(problems, detail)
        changes.publish.append(snap)
    return changes


# --- surveys ------------------------------------------------------------------------------
def create_survey(s: Session, data: m.SurveyIn, now: datetime) -> Survey:
    survey = Survey(name=data.name, created_at=now, updated_at=now)
    survey.variables = [SurveyVariable(name=v.name, type=v.type, options=list(v.options),
                                       position=i, created_at=now)
                        for i, v in enumerate(data.variables)]
    s.add(survey)
    s.flush()
    return survey


def list_surveys(s: Session) -> Sequence[Survey]:
    return s.scalars(select(Survey).order_by(Survey.created_at, Survey.id)).all()


def get_survey(s: Session, survey_id: str) -> Survey:
    return _get(s, Survey, survey_id, "survey")


def update_survey(s: Session, survey_id: str, data: m.SurveyPatch,
                  now: datetime) -> tuple[Survey, Changes]:
    survey = get_survey(s, survey_id)
    if data.name is not None:
        survey.name = data.name
    survey.updated_at = now
    # The survey's name travels in its automations' snapshots.
    return survey, _refresh(s, _automations_of_survey(s, survey_id), now)


def delete_survey(s: Session, survey_id: str) -> None:
    survey = get_survey(s, survey_id)
    users = _automations_of_survey(s, survey_id)
    if users:
        names = ", ".join(f"{a.name!r} ({a.id})" for a in users[:5])
        raise Conflict(f"survey {survey.name!r} is used by {len(users)} automation(s): {names}; "
                       "delete those first")
    s.delete(survey)


def _variable(survey: Survey, name: str) -> SurveyVariable:
    for v in survey.variables:
        if v.name == name:
            return v
    raise NotFound(f"survey {survey.name!r} has no variable named {name!r}")


def add_variable(s: Session, survey_id: str, data: m.VariableIn,
                 now: datetime) -> tuple[SurveyVariable, Changes]:
    survey = get_survey(s, survey_id)
    if any(v.name == data.name for v in survey.variables):
        raise Conflict(f"survey {survey.name!r} already has a variable named {data.name!r}")
    var = SurveyVariable(name=data.name, type=data.type, options=list(data.options),
                         position=max((v.position for v in survey.variables), default=-1) + 1,
                         created_at=now)
    survey.variables.append(var)
    survey.updated_at = now
    return var, _refresh(s, _automations_of_survey(s, survey_id), now)


def update_variable(s: Session, survey_id: str, name: str, data: m.VariablePatch,
                    now: datetime) -> tuple[SurveyVariable, Changes]:
    survey = get_survey(s, survey_id)
    var = _variable(survey, name)
    new_type = data.type if data.type is not None else var.type
    options = list(data.options) if data.options is not None else (
        list(var.options) if new_type == "choice" else [])
    try:
        m.check_options(new_type, options)
    except ValueError as exc:
        raise Invalid([Problem("options", str(exc))]) from None
    var.type, var.options = new_type, options
    survey.updated_at = now
    return var, _refresh(s, _automations_of_survey(s, survey_id), now)


def delete_variable(s: Session, survey_id: str, name: str, now: datetime) -> Changes:
    survey = get_survey(s, survey_id)
    var = _variable(survey, name)
    users = _automations_of_survey(s, survey_id)
    mapped = [(a, row) for a in users for row in a.mapping if row.variable == name]
    if mapped:
        a, row = mapped[0]
        raise Conflict(f"variable {name!r} is mapped from field {row.field!r} by automation "
                       f"{a.name!r} ({a.id}); change that mapping first",
                       [Problem("name", "used by a mapping", "in_use")])
    survey.variables.remove(var)
    survey.updated_at = now
    # A message placeholder may still name it: that makes this a conflict too.
    return _refresh(s, users, now, others=Conflict)


# --- messages -----------------------------------------------------------------------------
def create_message(s: Session, data: m.MessageIn, now: datetime) -> Message:
    msg = Message(name=data.name, subject=data.subject, body=data.body, created_at=now,
                  updated_at=now)
    s.add(msg)
    s.flush()
    return msg


def list_messages(s: Session) -> Sequence[Message]:
    return s.scalars(select(Message).order_by(Message.created_at, Message.id)).all()


def get_message(s: Session, message_id: str) -> Message:
    return _get(s, Message, message_id, "message")


def update_message(s: Session, message_id: str, data: m.MessagePatch,
                   now: datetime) -> tuple[Message, Changes]:
    msg = get_message(s, message_id)
    for name in ("name", "subject", "body"):
        value = getattr(data, name)
        if value is not None:
            setattr(msg, name, value)
    msg.updated_at = now
    # New placeholders must name variables of every survey this message is sent for.
    return msg, _refresh(s, _automations_of_message(s, message_id), now, others=Invalid)


def delete_message(s: Session, message_id: str) -> None:
    msg = get_message(s, message_id)
    users = _automations_of_message(s, message_id)
    if users:
        names = ", ".join(f"{a.name!r} ({a.id})" for a in users[:5])
        raise Conflict(f"message {msg.name!r} is used by {len(users)} automation(s): {names}")
    s.delete(msg)


# --- automations --------------------------------------------------------------------------
def _set_mapping(s: Session, a: Automation, mapping: list[m.MappingIn]) -> None:
    if a.mapping:
        # Old rows go first: the flush would insert the new before deleting the old, and
        # (automation, field) is unique.
        a.mapping.clear()
        s.flush()
    a.mapping.extend(MappingRow(position=i, field=x.field, variable=x.variable)
                     for i, x in enumerate(mapping))


def create_automation(s: Session, data: m.AutomationIn, now: datetime, *,
                      box: signing.SecretBox | None = None,
                      signing_secret: str | None = None) -> tuple[Automation, str, Changes]:
    """A new automation and its API key. `signing_secret` (sealed with `box`) is its first
    webhook signing secret; a mode that needs signatures needs one."""
    survey = _ref(s, Survey, data.survey_id, "survey_id", "survey")
    message = _ref(s, Message, data.message_id, "message_id", "message")
    api_key = keys.generate()
    a = Automation(
        id=new_id(),  # before the flush: a signing secret is sealed to it
        auth_mode=data.authentication.mode,
        signature_scheme=data.authentication.signature_scheme,
        name=data.name, survey=survey, message=message, email_field=data.email_field,
        fields_mode=data.fields.mode, fields_paths=list(data.fields.paths),
        filters=data.filters, delay_days=data.delay_days, enabled=data.enabled,
        disabled_reason=None,
        error_notifications_enabled=data.error_notifications.enabled,
        error_recipients=list(data.error_notifications.recipients),
        version=1, created_at=now, updated_at=now,
        api_keys=[ApiKey(sha256=keys.hash_key(api_key), created_at=now)],
        # invitation rules (issue 16)
        throttle_days=data.throttle_days, send_window=_window_json(data.send_window),
    )
    _set_limits(a, data.limits)  # per-automation limits (issue 13)
    if signing_secret is not None:
        _add_signing_secret(a, _box(box), signing_secret, now, 0.0,
                            field_name="authentication.signing_secret")
    _check_authentication(a, now)
    s.add(a)
    _set_mapping(s, a, data.mapping)
    s.flush()
    snap = build_snapshot(a)
    problems = check_snapshot(snap)
    if problems:
        raise Invalid(problems)
    return a, api_key, Changes(publish=[snap])


def list_automations(s: Session, survey_id: str | None = None) -> Sequence[Automation]:
    q = select(Automation).order_by(Automation.created_at, Automation.id)
    if survey_id is not None:
        q = q.where(Automation.survey_id == survey_id)
    return s.scalars(q).all()


def get_automation(s: Session, automation_id: str) -> Automation:
    return _get(s, Automation, automation_id, "automation")


def update_automation(s: Session, automation_id: str, data: m.AutomationPatch,
                      now: datetime) -> tuple[Automation, Changes]:
    a = get_automation(s, automation_id)
    given = data.model_fields_set
    if "survey_id" in given and data.survey_id is not None:
        a.survey = _ref(s, Survey, data.survey_id, "survey_id", "survey")
    if "message_id" in given and data.message_id is not None:
        a.message = _ref(s, Message, data.message_id, "message_id", "message")
    if data.name is not None:
        a.name = data.name
    if data.email_field is not None:
        a.email_field = data.email_field
    if data.fields is not None:
        a.fields_mode, a.fields_paths = data.fields.mode, list(data.fields.paths)
    if "filters" in given:
        a.filters = data.filters
    if data.mapping is not None:
        _set_mapping(s, a, data.mapping)
    if data.delay_days is not None:
        a.delay_days = data.delay_days
    if data.enabled is not None and data.enabled != a.enabled:
        a.enabled = data.enabled
        a.disabled_reason = None
    if data.error_notifications is not None:
        a.error_notifications_enabled = data.error_notifications.enabled
        a.error_recipients = list(data.error_notifications.recipients)
    if data.authentication is not None:
        a.auth_mode = data.authentication.mode
        a.signature_scheme = data.authentication.signature_scheme
        _check_authentication(a, now)
    # invitation rules (issue 16)
    if data.throttle_days is not None:
        a.throttle_days = data.throttle_days
    if "send_window" in given:
        a.send_window = _window_json(data.send_window)
    if "limits" in given:  # per-automation limits (issue 13)
        _set_limits(a, data.limits)
    return a, _refresh(s, [a], now, primary=a)


def _set_limits(a: Automation, limits: m.LimitsIn | None) -> None:
    """The ingress's limits for `a`; None (or a None field): the global setting."""
    limits = limits or m.LimitsIn()
    a.rate_limit, a.rate_burst = limits.rate, limits.burst
    a.max_body_bytes = limits.max_body_bytes


def _window_json(w: m.SendWindowIn | None) -> dict[str, Any] | None:
    """The send window as stored (JSON column) and shown (SendWindowOut)."""
    return None if w is None else w.model_dump()


def set_enabled(s: Session, automation_id: str, enabled: bool, reason: str | None,
                now: datetime) -> tuple[Automation, Changes]:
    a = get_automation(s, automation_id)
    a.enabled = enabled
    a.disabled_reason = None if enabled else reason
    return a, _refresh(s, [a], now, primary=a)


def rotate_key(s: Session, automation_id: str, grace_seconds: float,
               now: datetime) -> tuple[Automation, str, datetime | None, Changes]:
    """A new key; the current one keeps working `grace_seconds` more; expired ones go."""
    a = get_automation(s, automation_id)
    expiry = keys.grace_expiry(grace_seconds, now)
    previous_expiry: datetime | None = None
    for k in list(a.api_keys):
        if k.expires_at is not None and k.expires_at <= now:
            a.api_keys.remove(k)
            continue
        if k.expires_at is None or k.expires_at > expiry:
            k.expires_at = expiry
        previous_expiry = max(previous_expiry or k.expires_at, k.expires_at)
    api_key = keys.generate()
    a.api_keys.append(ApiKey(sha256=keys.hash_key(api_key), created_at=now))
    return a, api_key, previous_expiry, _refresh(s, [a], now, primary=a)


# --- signed webhooks (issue 16, item 1) ---------------------------------------------------
def _box(box: signing.SecretBox | None) -> signing.SecretBox:
    if box is None:
        raise RuntimeError("a signing secret needs the SecretBox (HOOKSTREAM_SECRETS_KEY)")
    return box


def _current_secrets(a: Automation, now: datetime) -> list[SigningSecret]:
    return [x for x in a.signing_secrets if x.expires_at is None or x.expires_at > now]


def _check_authentication(a: Automation, now: datetime) -> None:
    if signing.needs_signature(a.auth_mode) and not _current_secrets(a, now):
        raise Invalid([Problem(
            "authentication.mode", f"{a.auth_mode!r} needs a signing secret: create one first "
            "(POST /v1/automations/{id}/signing-secrets, or `hookstream automations "
            "rotate-secret`)", "no_signing_secret")])


def _add_signing_secret(a: Automation, box: signing.SecretBox, secret: str, now: datetime,
                        grace_seconds: float, *, field_name: str) -> datetime | None:
    """Seal `secret` onto `a`; the current secrets expire after `grace_seconds`, long-expired
    ones go. Returns when the previous secrets stop verifying (None: there were none)."""
    why = signing.check_secret(a.signature_scheme, secret)
    if why is not None:
        raise Invalid([Problem(field_name, why, "invalid_secret")])
    expiry = keys.grace_expiry(grace_seconds, now)
    previous: datetime | None = None
    for x in list(a.signing_secrets):
        if x.expires_at is not None and x.expires_at <= now:
            a.signing_secrets.remove(x)
            continue
        if x.expires_at is None or x.expires_at > expiry:
            x.expires_at = expiry
        previous = max(previous or x.expires_at, x.expires_at)
    a.signing_secrets.append(SigningSecret(sealed=box.seal(secret, a.id), created_at=now))
    return previous


def rotate_signing_secret(s: Session, automation_id: str, box: signing.SecretBox,
                          grace_seconds: float, now: datetime, secret: str | None = None,
                          ) -> tuple[Automation, str, datetime | None, Changes]:
    """A new signing secret (generated, or the sender's own `secret`); the current one keeps
    verifying `grace_seconds` more, so a sender can switch without a refused request."""
    a = get_automation(s, automation_id)
    new_secret = secret if secret is not None else signing.generate()
    previous = _add_signing_secret(a, box, new_secret, now, grace_seconds, field_name="secret")
    return a, new_secret, previous, _refresh(s, [a], now, primary=a)
# --- end signed webhooks -------------------------------------------------------------------


def delete_automation(s: Session, automation_id: str) -> Changes:
    a = get_automation(s, automation_id)
    s.delete(a)
    return Changes(delete=[automation_id])


def list_errors(s: Session, automation_id: str, limit: int) -> Sequence[Row[Any]]:
    get_automation(s, automation_id)
    if not inspect(s.connection()).has_table(AUTOMATION_ERRORS.name):
        return []  # the notifier, which records errors, has not created its tables yet
    e = AUTOMATION_ERRORS.c
    return s.execute(select(AUTOMATION_ERRORS).where(e.automation_id == automation_id)
                     .order_by(e.at.desc(), e.id).limit(limit)).all()


def all_snapshots(s: Session) -> list[AutomationSnapshot]:
    return [build_snapshot(a) for a in list_automations(s)]
