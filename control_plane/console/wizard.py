"""The create-automation wizard's state, one per person and run, kept in the admin app's memory.

The steps follow the help article: survey, incoming data, filters, API key and connection
test, mapping, settings (name, message, delay), status, error notifications. Nothing is
saved before the connection-test step; that step needs the automation and its key (the
ingress's test endpoint authenticates with it and dry-runs its settings), so it saves a
*disabled draft* (reason "draft: being set up in the console") and keeps it in step with the
earlier steps' choices. Finish saves the rest and sets the chosen status.

When the same wizard edits an existing automation, nothing is saved before Finish (the
connection test then dry-runs the saved settings).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from control_plane.console.filter_form import Node, empty_root, from_json

STEPS = (
    ("survey", "Survey"),
    ("incoming", "Incoming data"),
    ("filters", "Filters"),
    ("connection", "API key and connection test"),
    ("mapping", "Mapping"),
    ("settings", "Name, message and delay"),
    ("status", "Status"),
    ("notifications", "Error notifications"),
)
STEP_NAMES = [s for s, _ in STEPS]
DRAFT_REASON = "draft: being set up in the console"
MAX_WIZARDS = 200
WIZARD_TTL_S = 12 * 60 * 60


@dataclass
class WizardState:
    id: str
    sid: str  # the session it belongs to
    automation_id: str | None = None  # the draft, or the automation being edited
    editing: bool = False
    survey_id: str | None = None
    fields_mode: str = "exclude"
    fields_paths: list[str] = field(default_factory=list)
    email_field: str = "email"
    filter_root: Node = field(default_factory=empty_root)
    mapping: dict[str, str | None] = field(default_factory=dict)  # None: skipped
    name: str = ""
    message_id: str | None = None
    delay_on: bool = False
    delay_days: int = 1
    enabled: bool = True
    notify_on: bool = False
    recipients: list[str] = field(default_factory=list)
    key_once: str | None = None  # shown on the next render of the connection step, then gone
    reached: int = 0  # the furthest step index visited
    touched: float = field(default_factory=time.monotonic)


def from_automation(wid: str, sid: str, a: Any) -> WizardState:
    """A wizard that edits automation `a` (an AutomationOut-like object)."""
    return WizardState(
        id=wid, sid=sid, automation_id=a.id, editing=True, survey_id=a.survey_id,
        fields_mode=a.fields.mode, fields_paths=list(a.fields.paths), email_field=a.email_field,
        filter_root=from_json(a.filters), mapping={m.field: m.variable for m in a.mapping},
        name=a.name, message_id=a.message_id, delay_on=a.delay_days > 0,
        delay_days=max(a.delay_days, 1), enabled=a.enabled,
        notify_on=a.error_notifications.enabled,
        recipients=list(a.error_notifications.recipients), reached=len(STEPS) - 1)


class Wizards:
    """Bounded: the least recently used go first, and any untouched for WIZARD_TTL_S."""

    def __init__(self) -> None:
        self._by: OrderedDict[str, WizardState] = OrderedDict()

    def new(self, sid: str) -> WizardState:
        state = WizardState(id=secrets.token_urlsafe(12), sid=sid)
        self.put(state)
        return state

    def put(self, state: WizardState) -> None:
        self._by[state.id] = state
        self._by.move_to_end(state.id)
        while len(self._by) > MAX_WIZARDS:
            self._by.popitem(last=False)

    def get(self, wid: str, sid: str) -> WizardState | None:
        state = self._by.get(wid)
        if state is None or state.sid != sid:
            return None
        now = time.monotonic()
        if now - state.touched > WIZARD_TTL_S:
            del self._by[wid]
            return None
        state.touched = now
        self._by.move_to_end(wid)
        return state
