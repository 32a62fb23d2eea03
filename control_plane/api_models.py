"""Request and response bodies of the admin API (pydantic); they make its OpenAPI.

Every string is checked to be storable and publishable: no NUL, no lone surrogate (neither
PostgreSQL nor Avro's UTF-8 can hold them), so odd input is a 422, never a 500.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from automations.snapshot import VARIABLE_TYPES, WEEKDAYS

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_FILTER_DEPTH = 16
MAX_FILTER_NODES = 500


def storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text (lone surrogate)") from None
    return value


def _email(value: str) -> str:
    if not EMAIL_RE.match(value):
        raise ValueError("is not an e-mail address")
    return value


Text = Annotated[str, AfterValidator(storable)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                 AfterValidator(storable)]
VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
FieldPath = Annotated[str, StringConstraints(min_length=1, max_length=500),
                      AfterValidator(storable)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254),
                  AfterValidator(storable), AfterValidator(_email)]
Option = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(storable)]
VariableType = Literal["text", "number", "date", "boolean", "email", "choice"]
assert set(VARIABLE_TYPES) == set(VariableType.__args__)  # type: ignore[attr-defined]

RESERVED_PLACEHOLDERS = frozenset({"survey_link"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors ---------------------------------------------------------------------------------
class ProblemOut(BaseModel):
    field: str = Field(description="Dotted path of the offending input, e.g. mapping.1.variable")
    reason: str
    code: str


class ErrorOut(BaseModel):
    error: str = Field(description="Machine-readable code: unauthorized, not_found, conflict, "
                       "validation_failed, config_publish_failed")
    detail: str = Field(description="What went wrong, in a sentence")
    errors: list[ProblemOut] = Field(default_factory=list)


# --- surveys and variables -----------------------------------------------------------------
class VariableIn(Strict):
    name: VariableName
    type: VariableType
    options: list[Option] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _options_fit_type(self) -> VariableIn:
        check_options(self.type, self.options)
        if self.name in RESERVED_PLACEHOLDERS:
            raise ValueError(f"name {self.name!r} is reserved for the personal survey link")
        return self


def check_options(type_: str, options: list[str]) -> None:
    if type_ == "choice" and not options:
        raise ValueError("a choice variable needs at least one option")
    if type_ != "choice" and options:
        raise ValueError(f"options only apply to choice variables, not {type_}")
    if len(set(options)) != len(options):
        raise ValueError("options must be unique")


class VariablePatch(Strict):
    type: VariableType | None = None
    options: list[Option] | None = Field(default=None, max_length=500)


class VariableOut(BaseModel):
    name: str
    type: VariableType
    options: list[str]


class SurveyIn(Strict):
    name: Name
    variables: list[VariableIn] = Field(default_factory=list, max_length=200)

    @field_validator("variables")
    @classmethod
    def _unique_names(cls, v: list[VariableIn]) -> list[VariableIn]:
        names = [x.name for x in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variable names must be unique; repeated: {', '.join(dupes)}")
        return v


class SurveyPatch(Strict):
    name: Name | None = None


class SurveyOut(BaseModel):
    id: str
    name: str
    variables: list[VariableOut]
    created_at: datetime
    updated_at: datetime


class SurveyList(BaseModel):
    items: list[SurveyOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page")


# --- messages -----------------------------------------------------------------------------
class MessageIn(Strict):
    name: Name
    subject: Annotated[str, StringConstraints(min_length=1, max_length=500),
                       AfterValidator(storable)]
    body: Annotated[str, StringConstraints(min_length=1, max_length=100_000),
                    AfterValidator(storable)]


class MessagePatch(Strict):
    name: Name | None = None
    subject: Annotated[str, StringConstraints(min_length=1, max_length=500),
                       AfterValidator(storable)] | None = None
    body: Annotated[str, StringConstraints(min_length=1, max_length=100_000),
                    AfterValidator(storable)] | None = None


class MessageOut(BaseModel):
    id: str
    name: str
    subject: str
    body: str
    created_at: datetime
    updated_at: datetime


class MessageList(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page")


# --- automations --------------------------------------------------------------------------
class FieldsIn(Strict):
    mode: Literal["include", "exclude"] = Field(
        description="include: take in only these paths; exclude: take in all but these")
    paths: list[FieldPath] = Field(default_factory=list, max_length=1000)


class MappingIn(Strict):
    field: FieldPath
    variable: VariableName | None = Field(
        default=None, description="The survey variable; null: the field is skipped")


class ErrorNotificationsIn(Strict):
    enabled: bool = False
    recipients: list[Email] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _recipients_when_enabled(self) -> ErrorNotificationsIn:
        if self.enabled and not self.recipients:
            raise ValueError("error notifications are enabled but there are no recipients")
        return self


def _check_filter_shape(value: Any, depth: int = 0, count: list[int] | None = None) -> None:
    """Bounds and storability of the filter JSON; its meaning is checked by the engine."""
    count = count if count is not None else [0]
    count[0] += 1
    if count[0] > MAX_FILTER_NODES:
        raise ValueError(f"is too large (more than {MAX_FILTER_NODES} values)")
    if depth > MAX_FILTER_DEPTH:
        raise ValueError(f"is nested too deeply (more than {MAX_FILTER_DEPTH} levels)")
    if isinstance(value, str):
        storable(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("holds a number that is not finite")
    elif isinstance(value, dict):
        for k, v in value.items():
            storable(k)
            _check_filter_shape(v, depth + 1, count)
    elif isinstance(value, list):
        for v in value:
            _check_filter_shape(v, depth + 1, count)


def _filters(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        _check_filter_shape(value)
    return value


Filters = Annotated[dict[str, Any] | None, AfterValidator(_filters), Field(
    description='Nested {"all": [...]}, {"any": [...]}, {"not": ...} of conditions '
                '{"field", "op", "value"}; null: no filter (every record passes)')]


def _unique_mapping(v: list[MappingIn]) -> list[MappingIn]:
    fields = [m.field for m in v]
    dupes = sorted({f for f in fields if fields.count(f) > 1})
    if dupes:
        raise ValueError(f"each field may be mapped once; repeated: {', '.join(dupes)}")
    return v


Mapping = Annotated[list[MappingIn], Field(max_length=1000), AfterValidator(_unique_mapping)]
DelayDays = Annotated[int, Field(ge=0, le=3650, description="Days to wait before inviting")]


# --- signed webhooks (issue 16, item 1): automations.signing -------------------------------
AuthMode = Literal["key", "signature", "both"]
SignatureScheme = Literal["standard", "stripe", "shopify", "github"]
SigningSecretText = Annotated[str, StringConstraints(min_length=1, max_length=500)]


class AuthenticationSettings(Strict):
    """How the ingress authenticates this automation's webhooks."""

    mode: AuthMode = Field(default="key", description="key: the API key only; signature: a "
                           "valid signature only; both: the key and a valid signature")
    signature_scheme: SignatureScheme = Field(
        default="standard", description="standard (Standard Webhooks: webhook-id, "
        "webhook-timestamp, webhook-signature), stripe (Stripe-Signature), shopify "
        "(X-Shopify-Hmac-Sha256) or github (X-Hub-Signature-256)")


class AuthenticationIn(AuthenticationSettings):
    signing_secret: SigningSecretText | None = Field(
        default=None, description="Only when the mode needs a signature: the sender's own "
        "secret (Stripe and Shopify make theirs); left out, one is generated and returned "
        "once as `signing_secret`")


class SigningSecretIn(Strict):
    secret: SigningSecretText | None = Field(
        default=None, description="The sender's own secret; left out, one is generated "
        "(whsec_ + base64 of 32 random bytes) and returned once")


class SigningSecretOut(BaseModel):
    """Secret metadata; the secret itself is only ever shown once."""

    id: str
    created_at: datetime
    expires_at: datetime | None


class AuthenticationOut(BaseModel):
    mode: AuthMode = "key"
    signature_scheme: SignatureScheme = "standard"
    signing_secrets: list[SigningSecretOut] = Field(
        default_factory=list, description="Current and rotated-out (in grace) secrets")


class SigningSecretRotated(BaseModel):
    signing_secret: str = Field(description="The new signing secret, shown this once")
    previous_secrets_expire_at: datetime | None = Field(
        description="Until then signatures made with the previous secret still verify")
    version: int
# --- end signed webhooks -------------------------------------------------------------------
# --- invitation rules (issue 16): throttling and send windows ------------------------------
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
assert tuple(Weekday.__args__) == WEEKDAYS  # type: ignore[attr-defined]
TimeOfDay = Annotated[str, StringConstraints(pattern=r"^\d\d:\d\d$")]
ThrottleDays = Annotated[int, Field(
    ge=0, le=3650, description="Do not invite an address that this automation's survey "
    "invited (by any automation) within this many days; 0: no limit. A throttled invitation "
    "is not mailed: its outcome is `throttled`")]


class SendWindowIn(Strict):
    """When invitations may go out; one due outside waits until the window opens."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1,
                                max_length=7, description="Days of the week it is open "
                                "(local dates); default every day")
    start: TimeOfDay = Field(description="Local time it opens, HH:MM")
    end: TimeOfDay = Field(description="Local time it closes, HH:MM (24:00 allowed), after "
                           "start")
    time_zone: Annotated[str, StringConstraints(min_length=1, max_length=64),
                         AfterValidator(storable)] = Field(
        description="The automation's IANA time zone, e.g. Europe/Amsterdam")
    time_zone_field: FieldPath | None = Field(
        default=None, description="A mapped field holding the respondent's IANA time zone; "
        "when a record's value names one, the window is in that zone, else in time_zone")

    @field_validator("days")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each day may be named once")
        return [d for d in WEEKDAYS if d in v]  # in week order


class SendWindowOut(BaseModel):
    days: list[Weekday]
    start: str
    end: str
    time_zone: str
    time_zone_field: str | None


# --- per-automation ingress limits (issue 13, item 3) ----------------------------------------
MAX_RATE = 1_000_000.0


class LimitsIn(Strict):
    """The ingress's limits for this automation; null (or left out): the deployment's global
    setting. The rate holds across all ingress replicas when they share a rate store
    (HOOKSTREAM_INGRESS_RATE_STORE_URL; docs/DESIGN.md states the bound)."""

    rate: float | None = Field(default=None, gt=0, le=MAX_RATE, allow_inf_nan=False,
                               description="Requests per second accepted (token bucket); "
                               "null: HOOKSTREAM_RATE_LIMIT")
    burst: int | None = Field(default=None, ge=1, le=10_000_000,
                              description="Requests accepted in a burst above the rate; "
                              "null: HOOKSTREAM_RATE_BURST")
    max_body_bytes: int | None = Field(default=None, ge=1, description="Largest webhook "
                                       "body accepted (bytes; larger is 413 body_too_large); "
                                       "at most HOOKSTREAM_MAX_BODY_BYTES, the size the "
                                       "topics are made for; null: that setting")


class LimitsOut(BaseModel):
    rate: float | None = Field(description="Requests per second; null: the global setting")
    burst: int | None = Field(description="Burst above the rate; null: the global setting")
    max_body_bytes: int | None = Field(description="Largest body (bytes); null: the global "
                                       "setting")
# --- end per-automation limits ------------------------------------------------------------


class AutomationIn(Strict):
    name: Name
    survey_id: Annotated[str, StringConstraints(max_length=64), AfterValidator(storable)]
    message_id: Annotated[str, StringConstraints(max_length=64), AfterValidator(storable)]
    email_field: FieldPath
    fields: FieldsIn
    filters: Filters = None
    mapping: Mapping = Field(default_factory=list)
    delay_days: DelayDays = 0
    enabled: bool = True
    error_notifications: ErrorNotificationsIn = Field(default_factory=ErrorNotificationsIn)
    authentication: AuthenticationIn = Field(default_factory=AuthenticationIn)  # signed webhooks
    # invitation rules (issue 16)
    throttle_days: ThrottleDays = 0
    send_window: SendWindowIn | None = Field(default=None, description="null: any time")
    limits: LimitsIn = Field(default_factory=LimitsIn, description="The ingress's limits "
                             "for this automation (issue 13); each null: the global setting")


class AutomationPatch(Strict):
    """Only the fields given change; `fields`, `mapping`, `error_notifications`,
    `send_window` and `limits` are replaced as a whole. `filters: null` removes the filter,
    `send_window: null` the window, `limits: null` every per-automation limit."""

    name: Name | None = None
    survey_id: Annotated[str, StringConstraints(max_length=64),
                         AfterValidator(storable)] | None = None
    message_id: Annotated[str, StringConstraints(max_length=64),
                          AfterValidator(storable)] | None = None
    email_field: FieldPath | None = None
    fields: FieldsIn | None = None
    filters: Filters = None
    mapping: Mapping | None = None
    delay_days: DelayDays | None = None
    enabled: bool | None = None
    error_notifications: ErrorNotificationsIn | None = None
    authentication: AuthenticationSettings | None = None  # signed webhooks; secrets: rotate

    # invitation rules (issue 16); `send_window: null` removes the window
    throttle_days: ThrottleDays | None = None
    send_window: SendWindowIn | None = None
    # per-automation limits (issue 13): replaced as a whole; `limits: null` = every global
    limits: LimitsIn | None = None

    @field_validator("name", "survey_id", "message_id", "email_field", "fields", "mapping",
                     "delay_days", "enabled", "error_notifications", "authentication",
                     "throttle_days", mode="before")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        # Defaults are not validated, so this only sees an explicit null.
        if v is None:
            raise ValueError("may not be null; leave it out to keep the current value")
        return v


class DisableIn(Strict):
    reason: Annotated[str, StringConstraints(max_length=1000),
                      AfterValidator(storable)] | None = None


class FieldsOut(BaseModel):
    mode: Literal["include", "exclude"]
    paths: list[str]


class MappingOut(BaseModel):
    field: str
    variable: str | None


class ErrorNotificationsOut(BaseModel):
    enabled: bool
    recipients: list[str]


class ApiKeyOut(BaseModel):
    """Key metadata; the key itself is only ever shown once."""

    id: str
    created_at: datetime
    expires_at: datetime | None


class AutomationOut(BaseModel):
    id: str
    name: str
    survey_id: str
    message_id: str
    email_field: str
    fields: FieldsOut
    filters: dict[str, Any] | None
    mapping: list[MappingOut]
    delay_days: int
    enabled: bool
    disabled_reason: str | None
    error_notifications: ErrorNotificationsOut
    api_keys: list[ApiKeyOut]
    authentication: AuthenticationOut = Field(default_factory=AuthenticationOut)
    throttle_days: int = Field(description="Days an address the survey invited is not "
                               "invited again (0: no limit)")
    send_window: SendWindowOut | None = Field(description="When invitations may go out "
                                              "(null: any time)")
    limits: LimitsOut = Field(description="The ingress's limits for this automation; each "
                              "null: the global setting")
    version: int
    webhook_path: str = Field(description="Where the integrator POSTs (on the ingress)")
    created_at: datetime
    updated_at: datetime


class AutomationCreated(AutomationOut):
    api_key: str = Field(description="The integrator's key, shown this once: store it now")
    signing_secret: str | None = Field(
        default=None, description="Signed webhooks: the signing secret, shown this once "
        "(null when the mode is key, or the secret was given)")


class AutomationList(BaseModel):
    items: list[AutomationOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page")


class KeyRotated(BaseModel):
    api_key: str = Field(description="The new key, shown this once")
    previous_keys_expire_at: datetime | None = Field(
        description="Until then the previous key keeps working (grace period)")
    version: int


class AutomationErrorOut(BaseModel):
    error_id: str
    automation_id: str
    kind: str
    detail: str
    source: str
    field: str | None
    event_id: str | None
    record_index: int | None
    invitation_id: str | None
    at: datetime
    count: int = Field(default=1, description="How many times: 1, except for the ingress's "
                       "counts of refused requests (source ingress, kind refused_<code>)")
    since: datetime | None = Field(default=None, description="For a count: the start of "
                                   "the counted interval (it ends at `at`)")


class AutomationErrorList(BaseModel):
    items: list[AutomationErrorOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page")


# --- respondents, invitations, outcomes (read from the notifier's tables and the topics) ---
class RespondentOut(BaseModel):
    id: int
    survey_id: str
    email: str
    variables: dict[str, Any] = Field(description="Background data: the newest value of each")
    values_at: datetime = Field(description="When the newest values were received")
    created_at: datetime
    updated_at: datetime


class RespondentList(BaseModel):
    items: list[RespondentOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page")


InvitationStatus = Literal["sending", "sent", "failed", "suppressed", "throttled", "held",
                           "expired"]


class InvitationOut(BaseModel):
    id: str
    automation_id: str
    survey_id: str
    email: str | None = Field(description="The respondent's address (null if since removed)")
    status: InvitationStatus = Field(description="sending (being mailed), sent, failed "
                                     "(permanently refused), suppressed (not mailed: the "
                                     "automation was deleted), throttled (not mailed: "
                                     "invited to the survey within throttle_days), held "
                                     "(due while the automation was disabled: sent when it "
                                     "is enabled again within the hold expiry), expired "
                                     "(held past the hold expiry: not mailed)")
    reason: str | None
    smtp_code: int | None
    attempts: int
    event_id: str
    record_index: int
    received_at: datetime
    due_at: datetime
    created_at: datetime
    finished_at: datetime | None


class InvitationList(BaseModel):
    items: list[InvitationOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page")


class WaitingInvitationOut(BaseModel):
    invitation_id: str
    email: str
    due_at: datetime = Field(description="Waiting until then (the automation's delay, "
                             "moved to the opening of its send window)")
    received_at: datetime


class WaitingInvitationList(BaseModel):
    items: list[WaitingInvitationOut]
    complete: bool = Field(description="False when the scan of the waiting invitations "
                           "stopped at its time limit before the end")


class AutomationDeleted(BaseModel):
    automation_id: str
    held_dropped: int = Field(description="Held invitations (due while the automation was "
                              "disabled) dropped with it; the notifier records each as "
                              "suppressed. Invitations still waiting for their delay are "
                              "suppressed when they fall due.")


class ReasonCount(BaseModel):
    reason: str
    count: int


class AutomationOutcomes(BaseModel):
    """What became of the automation's records over the last 24 hours."""

    automation_id: str
    since: datetime
    accepted: int = Field(description="Records the ingress accepted and the worker read")
    filtered: int = Field(description="Records the filters left out (not errors)")
    failed: int = Field(description="Records that failed (each on the dead-letter topic)")
    invited: int = Field(description="Invitations created (due now or after the delay)")
    mailed: int = Field(description="Invitation e-mails sent")
    mail_failed: int = Field(description="Invitations whose e-mail was refused for good")
    suppressed: int = Field(description="Invitations not mailed (suppressed)")
    throttled: int = Field(default=0, description="Invitations not mailed because the "
                           "address was invited to the survey within throttle_days")
    held: int = Field(default=0, description="Invitations held now (not only the last 24 "
                      "hours): due while the automation was disabled, sent when it is "
                      "enabled again within HOOKSTREAM_HOLD_EXPIRY_DAYS of their due time")
    expired: int = Field(default=0, description="Held invitations that were not sent "
                         "because the automation stayed disabled past the hold expiry")
    filtered_by: list[ReasonCount] = Field(
        description="Filtered-out records by the condition that failed and why (a value of "
        "the wrong type says so), most frequent first")
    failed_by: list[ReasonCount] = Field(description="Failed records by error kind")
    dead_letters: int = Field(description="This automation's records on the dead-letter "
                              "topic (its whole retention, replayed or not)")
    counts_complete: bool = Field(description="False while the admin app is still reading "
                                  "the counts topic (just started, or Kafka away)")


class ReplayOut(BaseModel):
    replayed: int = Field(description="Dead-letter records put back on webhooks.raw")
