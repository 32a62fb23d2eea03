"""SQL rows to the admin API's response bodies (called inside the session that loaded them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from control_plane import api_models as m
from control_plane.store.models import (
    Automation,
    Message,
    Survey,
    SurveyVariable,
)


def variable_out(v: SurveyVariable) -> m.VariableOut:
    return m.VariableOut(name=v.name, type=v.type, options=list(v.options or ()))  # type: ignore[arg-type]


def survey_out(s: Survey) -> m.SurveyOut:
    return m.SurveyOut(id=s.id, name=s.name, variables=[variable_out(v) for v in s.variables],
                       created_at=s.created_at, updated_at=s.updated_at)


def message_out(msg: Message) -> m.MessageOut:
    return m.MessageOut(id=msg.id, name=msg.name, subject=msg.subject, body=msg.body,
                        created_at=msg.created_at, updated_at=msg.updated_at)


def automation_fields(a: Automation) -> dict[str, object]:
    return dict(
        id=a.id, name=a.name, survey_id=a.survey_id, message_id=a.message_id,
        email_field=a.email_field,
        fields=m.FieldsOut(mode=a.fields_mode, paths=list(a.fields_paths or ())),  # type: ignore[arg-type]
        filters=a.filters,
        mapping=[m.MappingOut(field=r.field, variable=r.variable) for r in a.mapping],
        delay_days=a.delay_days, enabled=a.enabled, disabled_reason=a.disabled_reason,
        error_notifications=m.ErrorNotificationsOut(enabled=a.error_notifications_enabled,
                                                    recipients=list(a.error_recipients or ())),
        api_keys=[m.ApiKeyOut(id=k.id, created_at=k.created_at, expires_at=k.expires_at)
                  for k in a.api_keys],
        authentication=m.AuthenticationOut(  # signed webhooks
            mode=a.auth_mode or "key",  # type: ignore[arg-type]
            signature_scheme=a.signature_scheme or "standard",  # type: ignore[arg-type]
            signing_secrets=[m.SigningSecretOut(id=x.id, created_at=x.created_at,
                                                expires_at=x.expires_at)
                             for x in a.signing_secrets]),
        # invitation rules (issue 16)
        throttle_days=a.throttle_days or 0,
        send_window=None if a.send_window is None else m.SendWindowOut(**a.send_window),
        # per-automation limits (issue 13)
        limits=m.LimitsOut(rate=a.rate_limit, burst=a.rate_burst,
                           max_body_bytes=a.max_body_bytes),
        version=a.version, webhook_path=f"/v1/hooks/{a.id}",
        created_at=a.created_at, updated_at=a.updated_at,
    )


def automation_out(a: Automation) -> m.AutomationOut:
    return m.AutomationOut(**automation_fields(a))  # type: ignore[arg-type]


def automation_created(a: Automation, api_key: str,
                       signing_secret: str | None = None) -> m.AutomationCreated:
    return m.AutomationCreated(**automation_fields(a), api_key=api_key,  # type: ignore[arg-type]
                               signing_secret=signing_secret)


def error_out(e: Row[Any]) -> m.AutomationErrorOut:
    return m.AutomationErrorOut(
        error_id=e.id, automation_id=e.automation_id, kind=e.kind, detail=e.detail,
        source=e.source, field=e.field, event_id=e.event_id, record_index=e.record_index,
        invitation_id=e.invitation_id, at=e.at, count=getattr(e, "count", None) or 1,
        since=getattr(e, "since", None))
