"""The automation as the data plane sees it: the value of the `automations.config` topic.

The control plane builds it from SQL after each commit; ingress, streams and notifier read it
from the compacted topic (see `config_cache.py`). The Avro schema is
`schemas/AutomationSnapshot.avsc`; `to_record`/`from_record` convert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

VariableType = Literal["text", "number", "date", "boolean", "email", "choice"]
VARIABLE_TYPES: tuple[VariableType, ...] = ("text", "number", "date", "boolean", "email", "choice")


@dataclass(frozen=True)
class Variable:
    name: str
    type: VariableType
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class FieldMapping:
    field: str
    variable: str | None  # None: skipped (not imported)


@dataclass(frozen=True)
class MessageTemplate:
    id: str
    name: str
    subject: str
    body: str


@dataclass(frozen=True)
class ApiKeyHash:
    sha256: str
    expires_at: datetime | None = None  # set on the old key after a rotation (grace period)


# --- signed webhooks (issue 16, item 1) ---------------------------------------------------
@dataclass(frozen=True)
class SealedSecret:
    """A webhook signing secret, sealed (`automations.signing.SecretBox`): only the control
    plane and the ingress, which hold HOOKSTREAM_SECRETS_KEY, can open it."""

    id: str
    sealed: str
    expires_at: datetime | None = None  # set on the old secret after a rotation (grace period)
# --- end signed webhooks -------------------------------------------------------------------
# --- invitation rules (issue 16): throttling and send windows ---------------------------------
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class SendWindow:
    """When the automation may send: `start` to `end` ("HH:MM", local time; `end` after
    `start`, "24:00" allowed) on `days`, in the respondent's time zone (the IANA name in the
    mapped field `time_zone_field`, when set and valid) or else in `time_zone`. The rule
    itself is `automations.send_window`."""

    days: tuple[str, ...]  # of WEEKDAYS, in week order
    start: str
    end: str
    time_zone: str
    time_zone_field: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {"days": list(self.days), "start": self.start, "end": self.end,
                "time_zone": self.time_zone, "time_zone_field": self.time_zone_field}

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> SendWindow:
        return cls(days=tuple(r["days"]), start=r["start"], end=r["end"],
                   time_zone=r["time_zone"], time_zone_field=r.get("time_zone_field"))


@dataclass(frozen=True)
class AutomationSnapshot:
    id: str
    version: int
    name: str
    survey_id: str
    survey_name: str
    enabled: bool
    message: MessageTemplate
    variables: tuple[Variable, ...]
    email_field: str
    fields_mode: Literal["include", "exclude"]
    fields_paths: tuple[str, ...]
    filters: dict[str, Any] | None
    mapping: tuple[FieldMapping, ...]
    delay_days: int
    error_notifications_enabled: bool
    error_recipients: tuple[str, ...]
    api_keys: tuple[ApiKeyHash, ...]
    updated_at: datetime
    disabled_reason: str | None = None
    # --- signed webhooks (issue 16, item 1): automations.signing ---
    auth_mode: str = "key"  # key | signature | both
    signature_scheme: str = "standard"  # standard | stripe | shopify | github
    signing_secrets: tuple[SealedSecret, ...] = ()
    # --- end signed webhooks ---
    # Invitation rules (issue 16): not again to an address the survey invited within
    # `throttle_days` (0: off; the notifier checks it), and the send window (None: any time).
    throttle_days: int = 0
    send_window: SendWindow | None = None
    # Per-automation ingress limits (issue 13, item 3); None: the ingress's global setting
    # (HOOKSTREAM_RATE_LIMIT, HOOKSTREAM_RATE_BURST, HOOKSTREAM_MAX_BODY_BYTES).
    rate_limit: float | None = None
    rate_burst: int | None = None
    max_body_bytes: int | None = None
    _variables_by_name: dict[str, Variable] = field(default_factory=dict, compare=False,
                                                    repr=False)

    def __post_init__(self) -> None:
        self._variables_by_name.update({v.name: v for v in self.variables})

    def variable(self, name: str) -> Variable | None:
        return self._variables_by_name.get(name)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schemas/AutomationSnapshot.avsc)."""
        return {
            "id": self.id, "version": self.version, "name": self.name,
            "survey_id": self.survey_id, "survey_name": self.survey_name,
            "enabled": self.enabled, "disabled_reason": self.disabled_reason,
            "message": {"id": self.message.id, "name": self.message.name,
                        "subject": self.message.subject, "body": self.message.body},
            "variables": [{"name": v.name, "type": v.type, "options": list(v.options)}
                          for v in self.variables],
            "email_field": self.email_field, "fields_mode": self.fields_mode,
            "fields_paths": list(self.fields_paths),
            "filters_json": None if self.filters is None else json.dumps(self.filters),
            "mapping": [{"field": m.field, "variable": m.variable} for m in self.mapping],
            "delay_days": self.delay_days,
            "error_notifications_enabled": self.error_notifications_enabled,
            "error_recipients": list(self.error_recipients),
            "api_keys": [{"sha256": k.sha256, "expires_at": k.expires_at} for k in self.api_keys],
            "updated_at": self.updated_at,
            # signed webhooks (issue 16, item 1)
            "auth_mode": self.auth_mode, "signature_scheme": self.signature_scheme,
            "signing_secrets": [{"id": x.id, "sealed": x.sealed, "expires_at": x.expires_at}
                                for x in self.signing_secrets],
            # invitation rules (issue 16)
            "throttle_days": self.throttle_days,
            "send_window": None if self.send_window is None else self.send_window.to_record(),
            # per-automation limits (issue 13)
            "rate_limit": self.rate_limit, "rate_burst": self.rate_burst,
            "max_body_bytes": self.max_body_bytes,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> AutomationSnapshot:
        m = r["message"]
        return cls(
            id=r["id"], version=r["version"], name=r["name"], survey_id=r["survey_id"],
            survey_name=r["survey_name"], enabled=r["enabled"],
            disabled_reason=r.get("disabled_reason"),
            message=MessageTemplate(m["id"], m["name"], m["subject"], m["body"]),
            variables=tuple(Variable(v["name"], v["type"], tuple(v.get("options") or ()))
                            for v in r["variables"]),
            email_field=r["email_field"], fields_mode=r["fields_mode"],
            fields_paths=tuple(r["fields_paths"]),
            filters=None if r.get("filters_json") is None else json.loads(r["filters_json"]),
            mapping=tuple(FieldMapping(x["field"], x.get("variable")) for x in r["mapping"]),
            delay_days=r["delay_days"],
            error_notifications_enabled=r["error_notifications_enabled"],
            error_recipients=tuple(r["error_recipients"]),
            api_keys=tuple(ApiKeyHash(k["sha256"], _aware(k.get("expires_at")))
                           for k in r["api_keys"]),
            updated_at=_aware(r["updated_at"]) or datetime.now(UTC),
            # signed webhooks (issue 16, item 1)
            auth_mode=r.get("auth_mode") or "key",
            signature_scheme=r.get("signature_scheme") or "standard",
            signing_secrets=tuple(SealedSecret(x["id"], x["sealed"], _aware(x.get("expires_at")))
                                  for x in r.get("signing_secrets") or ()),
            # invitation rules (issue 16); absent from snapshots written before them
            throttle_days=r.get("throttle_days") or 0,
            send_window=None if r.get("send_window") is None
            else SendWindow.from_record(r["send_window"]),
            # per-automation limits (issue 13); absent from earlier snapshots: the globals
            rate_limit=r.get("rate_limit"), rate_burst=r.get("rate_burst"),
            max_body_bytes=r.get("max_body_bytes"),
        )


def _aware(value: datetime | int | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
