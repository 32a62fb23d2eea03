"""Save-time checks of an automation's snapshot, through the engine's `validation` module."""

from __future__ import annotations

from dataclasses import replace

from automations.problems import Problem
from automations.snapshot import AutomationSnapshot
from automations.validation import validate_automation


def check_snapshot(snap: AutomationSnapshot) -> list[Problem]:
    """Every problem of the automation as it would be saved; empty when it can be."""
    # A problem with a code of its own (a regex RE2 cannot run) keeps it; the rest are
    # `invalid_setting`.
    return [p if p.code != "invalid" else replace(p, code="invalid_setting")
            for p in validate_automation(
        fields_mode=snap.fields_mode, fields_paths=list(snap.fields_paths),
        filters=snap.filters, mapping=list(snap.mapping), email_field=snap.email_field,
        variables=[v.name for v in snap.variables], subject=snap.message.subject,
        body=snap.message.body,
        # invitation rules (issue 16)
        throttle_days=snap.throttle_days, send_window=snap.send_window,
        variable_types={v.name: v.type for v in snap.variables})]
