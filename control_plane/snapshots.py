"""Build the `AutomationSnapshot` the data plane reads from the SQL rows of an automation."""

from __future__ import annotations

from automations.snapshot import (
    ApiKeyHash,
    AutomationSnapshot,
    FieldMapping,
    MessageTemplate,
    SealedSecret,
    SendWindow,
    Variable,
)
from control_plane.store.models import Automation


def build_snapshot(a: Automation) -> AutomationSnapshot:
    # Every key row goes in, expired or not: consumers check `expires_at`, and the snapshot
    # stays a pure function of the store (rotation prunes the long-expired rows).
    return AutomationSnapshot(
        id=a.id,
        version=a.version,
        name=a.name,
        survey_id=a.survey.id,
        survey_name=a.survey.name,
        enabled=a.enabled,
        disabled_reason=a.disabled_reason,
        message=MessageTemplate(a.message.id, a.message.name, a.message.subject, a.message.body),
        variables=tuple(Variable(v.name, v.type, tuple(v.options or ()))  # type: ignore[arg-type]
                        for v in a.survey.variables),
        email_field=a.email_field,
        fields_mode=a.fields_mode,  # type: ignore[arg-type]
        fields_paths=tuple(a.fields_paths or ()),
        filters=a.filters,
        mapping=tuple(FieldMapping(m.field, m.variable) for m in a.mapping),
        delay_days=a.delay_days,
        error_notifications_enabled=a.error_notifications_enabled,
        error_recipients=tuple(a.error_recipients or ()),
        api_keys=tuple(ApiKeyHash(k.sha256, k.expires_at) for k in a.api_keys),
        updated_at=a.updated_at,
        # signed webhooks (issue 16, item 1): sealed, as stored; the ingress opens them
        auth_mode=a.auth_mode or "key",
        signature_scheme=a.signature_scheme or "standard",
        signing_secrets=tuple(SealedSecret(x.id, x.sealed, x.expires_at)
                              for x in a.signing_secrets),
        # invitation rules (issue 16)
        throttle_days=a.throttle_days or 0,
        send_window=None if a.send_window is None else SendWindow(
            days=tuple(a.send_window["days"]), start=a.send_window["start"],
            end=a.send_window["end"], time_zone=a.send_window["time_zone"],
            time_zone_field=a.send_window.get("time_zone_field")),
        # per-automation limits (issue 13)
        rate_limit=a.rate_limit, rate_burst=a.rate_burst, max_body_bytes=a.max_body_bytes,
    )
