"""Request bodies and small steps the control-plane tests share."""

from __future__ import annotations

from typing import Any

import httpx


async def make_survey(admin: httpx.AsyncClient, name: str = "Customer satisfaction") -> dict:
    r = await admin.post("/v1/surveys", json={"name": name})
    assert r.status_code == 201, r.text
    survey = r.json()
    for var in ({"name": "city", "type": "text"},
                {"name": "plan", "type": "choice", "options": ["basic", "pro"]}):
        r = await admin.post(f"/v1/surveys/{survey['id']}/variables", json=var)
        assert r.status_code == 201, r.text
    return survey


async def make_message(admin: httpx.AsyncClient,
                       body: str = "Hello from {{ city }}: {{ survey_link }}") -> dict:
    r = await admin.post("/v1/messages", json={"name": "Invite", "subject": "Your opinion",
                                               "body": body})
    assert r.status_code == 201, r.text
    return r.json()


def automation_body(survey_id: str, message_id: str, **overrides: Any) -> dict[str, Any]:
    """Every setting of the seed: included fields, two-condition filter, a skipped field,
    2-day delay, created disabled, two error recipients."""
    body: dict[str, Any] = {
        "name": "Webshop orders",
        "survey_id": survey_id,
        "message_id": message_id,
        "email_field": "customer.email",
        "fields": {"mode": "include",
                   "paths": ["customer.email", "customer.city", "plan", "order.id"]},
        "filters": {"all": [
            {"field": "customer.city", "op": "ne", "value": "Nowhere"},
            {"field": "plan", "op": "in", "value": ["basic", "pro"]},
        ]},
        "mapping": [
            {"field": "customer.city", "variable": "city"},
            {"field": "plan", "variable": "plan"},
            {"field": "order.id", "variable": None},
        ],
        "delay_days": 2,
        "enabled": False,
        "error_notifications": {"enabled": True,
                                "recipients": ["ops@example.com", "lead@example.com"]},
    }
    body.update(overrides)
    return body


async def make_automation(admin: httpx.AsyncClient, **overrides: Any) -> dict:
    survey = await make_survey(admin)
    message = await make_message(admin)
    r = await admin.post("/v1/automations",
                         json=automation_body(survey["id"], message["id"], **overrides))
    assert r.status_code == 201, r.text
    return r.json()
