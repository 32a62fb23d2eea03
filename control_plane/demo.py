"""A demo survey, message and enabled automation, created through the admin API."""

from __future__ import annotations

import httpx

DEMO_VARIABLES = [
    {"name": "first_name", "type": "text"},
    {"name": "city", "type": "text"},
    {"name": "plan", "type": "choice", "options": ["basic", "pro", "enterprise"]},
    {"name": "signup_date", "type": "date"},
]


def _ok(r: httpx.Response) -> dict:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url.path} answered "
                           f"{r.status_code}: {r.text}")
    return r.json()


def seed_demo(base_url: str, token: str, timeout: float = 30.0) -> tuple[str, str]:
    """(automation id, its API key) of a new enabled demo automation with no delay."""
    with httpx.Client(base_url=base_url, timeout=timeout,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        survey = _ok(c.post("/v1/surveys", json={"name": "Demo: customer satisfaction",
                                                 "variables": DEMO_VARIABLES}))
        message = _ok(c.post("/v1/messages", json={
            "name": "Demo invitation",
            "subject": "{{ first_name }}, how are we doing?",
            "body": "Hello {{ first_name }},\n\nPlease tell us about your experience: "
                    "{{ survey_link }}\n\nThank you!"}))
        automation = _ok(c.post("/v1/automations", json={
            "name": "Demo webhook",
            "survey_id": survey["id"],
            "message_id": message["id"],
            "email_field": "email",
            "fields": {"mode": "exclude", "paths": ["internal"]},
            "filters": {"all": [{"field": "email", "op": "exists"}]},
            "mapping": [
                {"field": "first_name", "variable": "first_name"},
                {"field": "city", "variable": "city"},
                {"field": "plan", "variable": "plan"},
                {"field": "signup_date", "variable": "signup_date"},
                {"field": "customer_id", "variable": None},
            ],
            "delay_days": 0,
            "enabled": True,
            "error_notifications": {"enabled": True, "recipients": ["ops@example.com"]},
        }))
    return automation["id"], automation["api_key"]
