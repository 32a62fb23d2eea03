"""The admin API end to end, on SQLite and PostgreSQL, with a real Kafka behind the lifespan."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from control_plane.api import create_app
from core.settings import Settings
from tests.control_plane.builders import (
    automation_body,
    make_automation,
    make_message,
    make_survey,
)

pytestmark = pytest.mark.kafka


async def test_create_automation_with_every_setting(admin: httpx.AsyncClient) -> None:
    survey = await make_survey(admin)
    message = await make_message(admin)
    body = automation_body(survey["id"], message["id"])
    r = await admin.post("/v1/automations", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["api_key"]
    assert len(key) >= 40
    aid = created["id"]

    r = await admin.get(f"/v1/automations/{aid}")
    assert r.status_code == 200
    got = r.json()
    for name in ("name", "survey_id", "message_id", "email_field", "fields", "filters",
                 "mapping", "delay_days", "enabled", "error_notifications"):
        assert got[name] == body[name], name
    assert got["enabled"] is False and got["disabled_reason"] is None
    assert got["mapping"][2] == {"field": "order.id", "variable": None}  # skipped
    assert got["version"] == 1 and got["webhook_path"] == f"/v1/hooks/{aid}"
    assert len(got["api_keys"]) == 1 and got["api_keys"][0]["expires_at"] is None

    # The key is never shown again, nor its hash, by any read.
    digest = hashlib.sha256(key.encode()).hexdigest()
    for path in (f"/v1/automations/{aid}", "/v1/automations", f"/v1/surveys/{survey['id']}",
                 f"/v1/automations/{aid}/errors"):
        text = (await admin.get(path)).text
        assert key not in text and digest not in text, path
    r = await admin.post(f"/v1/automations/{aid}/enable")
    assert key not in r.text and r.json()["enabled"] is True and r.json()["version"] == 2

    listed = (await admin.get("/v1/automations", params={"survey_id": survey["id"]})).json()
    assert [a["id"] for a in listed["items"]] == [aid]


async def test_defaults_enabled_and_patch(admin: httpx.AsyncClient) -> None:
    survey = await make_survey(admin)
    message = await make_message(admin)
    body = automation_body(survey["id"], message["id"])
    del body["enabled"], body["filters"], body["error_notifications"]
    r = await admin.post("/v1/automations", json=body)
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["enabled"] is True and a["filters"] is None
    assert a["error_notifications"] == {"enabled": False, "recipients": []}

    r = await admin.patch(f"/v1/automations/{a['id']}",
                          json={"delay_days": 5, "name": "Renamed",
                                "error_notifications": {"enabled": True,
                                                        "recipients": ["x@example.org"]}})
    assert r.status_code == 200, r.text
    p = r.json()
    assert (p["delay_days"], p["name"], p["version"]) == (5, "Renamed", 2)
    assert p["error_notifications"]["recipients"] == ["x@example.org"]
    assert p["mapping"] == a["mapping"]  # untouched

    r = await admin.patch(f"/v1/automations/{a['id']}", json={"name": None})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name"


def _problem(r: httpx.Response) -> tuple[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "validation_failed"
    first = body["errors"][0]
    return first["field"], first["reason"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_save_time_validation_names_the_problem(admin: httpx.AsyncClient) -> None:
    survey = await make_survey(admin)
    message = await make_message(admin)
    sid, mid = survey["id"], message["id"]

    async def post(**over: object) -> tuple[str, str]:
        body = {**automation_body(sid, mid), **over}
        return _problem(await admin.post("/v1/automations", json=body))

    # A mapping onto a variable the survey does not have.
    field, reason = await post(mapping=[{"field": "customer.city", "variable": "town"}])
    assert field == "mapping[0].variable" and "town" in reason
    # The e-mail field is not among the fields taken in.
    field, reason = await post(email_field="contact.email")
    assert field == "email_field" and "contact.email" in reason
    # A field mapped that the include/exclude choice drops.
    field, reason = await post(fields={"mode": "exclude", "paths": ["customer.city"]},
                               filters=None)
    assert field == "mapping[0].field" and "customer.city" in reason
    # An unknown operator.
    field, reason = await post(filters={"all": [{"field": "plan", "op": "like",
                                                 "value": "p"}]})
    assert field.startswith("filters.all[0]") and "like" in reason
    # A regex that does not compile.
    field, reason = await post(filters={"field": "plan", "op": "regex", "value": "(unclosed"})
    assert field == "filters.value" and "regular expression" in reason
    # A backreference: Python's engine runs it, the linear-time one (RE2) does not.
    r = await admin.post("/v1/automations", json={
        **automation_body(sid, mid), "filters": {"field": "plan", "op": "regex",
                                                 "value": r"(a)\1"}})
    assert r.status_code == 422 and r.json()["error"] == "validation_failed", r.text
    first = r.json()["errors"][0]
    assert (first["field"], first["code"]) == ("filters.value", "regex_unsupported")
    assert "backreferences" in first["reason"]
    # A placeholder in the message that names no variable of the survey.
    bad = await make_message(admin, body="Hi {{ first_name }}, {{ survey_link }}")
    field, reason = await post(message_id=bad["id"])
    assert field == "message_id" and "first_name" in reason
    # And the same for a change: a PATCH that maps onto an unknown variable.
    a = await make_automation(admin)
    field, reason = _problem(await admin.patch(
        f"/v1/automations/{a['id']}", json={"mapping": [{"field": "plan", "variable": "nope"}]}))
    assert field == "mapping[0].variable" and "nope" in reason
    # Changing the message so it names an unknown variable breaks the automation: 422.
    field, reason = _problem(await admin.patch(f"/v1/messages/{a['message_id']}",
                                               json={"body": "{{ shoe_size }}"}))
    assert "shoe_size" in reason
    # Request-shape problems get the same answer shape.
    field, reason = await post(delay_days=-1)
    assert field == "delay_days"
    field, reason = await post(error_notifications={"enabled": True,
                                                    "recipients": ["not-an-address"]})
    assert field == "error_notifications.recipients[0]" and "e-mail" in reason
    field, reason = await post(survey_id="no-such-survey")
    assert field == "survey_id" and "no survey" in reason
    field, _ = _problem(await admin.post("/v1/surveys/x/variables",
                                         json={"name": "bad name", "type": "text"}))
    assert field == "name"
    field, reason = _problem(await admin.post(f"/v1/surveys/{sid}/variables",
                                              json={"name": "size", "type": "choice"}))
    assert "option" in reason
    r = await admin.post("/v1/automations", content=b"{not json",
                         headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "validation_failed"
    r = await admin.post("/v1/surveys", json={"name": "x\u0000y"})
    assert r.status_code == 422


async def test_auth_required(admin: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"},
                    {"Authorization": "Basic dGVzdA=="}):
        r = await admin.get("/v1/automations", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    r = await admin.post("/v1/surveys", json={"name": "x"}, headers={"Authorization": ""})
    assert r.status_code == 401
    assert (await admin.get("/healthz", headers={"Authorization": ""})).status_code == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_not_found_and_conflicts(admin: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/v1/automations/nope"), ("PATCH", "/v1/automations/nope"),
                         ("DELETE", "/v1/automations/nope"), ("GET", "/v1/surveys/nope"),
                         ("POST", "/v1/automations/nope/enable"),
                         ("POST", "/v1/automations/nope/keys"),
                         ("GET", "/v1/automations/nope/errors"),
                         ("DELETE", "/v1/messages/nope")):
        r = await admin.request(method, path, json={} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"] == "not_found"

    a = await make_automation(admin)
    sid = a["survey_id"]
    r = await admin.delete(f"/v1/surveys/{sid}")
    assert r.status_code == 409 and a["id"] in r.json()["detail"]
    r = await admin.delete(f"/v1/surveys/{sid}/variables/city")
    assert r.status_code == 409 and "customer.city" in r.json()["detail"]
    r = await admin.delete(f"/v1/messages/{a['message_id']}")
    assert r.status_code == 409
    r = await admin.post(f"/v1/surveys/{sid}/variables", json={"name": "city", "type": "text"})
    assert r.status_code == 409
    # A variable no mapping uses may go; then, with the automation gone, the survey too.
    r = await admin.post(f"/v1/surveys/{sid}/variables", json={"name": "spare", "type": "text"})
    assert r.status_code == 201
    assert (await admin.delete(f"/v1/surveys/{sid}/variables/spare")).status_code == 204
    gone = await admin.delete(f"/v1/automations/{a['id']}")
    assert gone.status_code == 200 and gone.json()["held_dropped"] == 0
    assert (await admin.get(f"/v1/automations/{a['id']}")).status_code == 404
    assert (await admin.delete(f"/v1/surveys/{sid}")).status_code == 204


async def test_key_rotation_keeps_old_key_for_grace(admin: httpx.AsyncClient) -> None:
    a = await make_automation(admin)
    before = datetime.now(UTC)
    r = await admin.post(f"/v1/automations/{a['id']}/keys")
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["api_key"] != a["api_key"]
    expires = datetime.fromisoformat(rotated["previous_keys_expire_at"])
    assert before + timedelta(seconds=3590) < expires < before + timedelta(seconds=3700)
    got = (await admin.get(f"/v1/automations/{a['id']}")).json()
    assert got["version"] == rotated["version"] == 2
    assert sorted(k["expires_at"] is None for k in got["api_keys"]) == [False, True]
    assert rotated["api_key"] not in (await admin.get(f"/v1/automations/{a['id']}")).text


async def test_disable_with_reason_and_enable(admin: httpx.AsyncClient) -> None:
    a = await make_automation(admin, enabled=True)
    r = await admin.post(f"/v1/automations/{a['id']}/disable",
                         json={"reason": "too many bounces"})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert r.json()["disabled_reason"] == "too many bounces"
    r = await admin.post(f"/v1/automations/{a['id']}/disable")  # no body: no reason
    assert r.status_code == 200 and r.json()["disabled_reason"] is None
    r = await admin.post(f"/v1/automations/{a['id']}/enable")
    assert r.json()["enabled"] is True and r.json()["disabled_reason"] is None
    assert r.json()["version"] == 4


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_probes_name_their_checks(settings: Settings, admin: httpx.AsyncClient) -> None:
    """Not started yet: alive, not ready, every check named. Started: ready, with the count
    of changes still to publish. The probes need no token; no survey page here."""
    idle = create_app(settings)  # its lifespan (migrations, topics, republish) not run
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=idle),
                                 base_url="http://admin") as cold:
        assert (await cold.get("/healthz")).status_code == 200
        r = await cold.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["checks"] == {"kafka": False, "republished": False,
                                      "publisher": False, "database": False}
    r = await admin.get("/readyz", headers={"Authorization": ""})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "ready": True, "pending_publishes": 0,
                        "checks": {"kafka": True, "republished": True, "publisher": True,
                                   "database": True}}
    assert "hookstream_admin_requests_total" in (await admin.get("/metrics")).text
    assert (await admin.get("/s/" + "x" * 32)).status_code == 404


def test_the_admin_api_does_not_import_the_notifier(tmp_path: Path) -> None:
    """The survey page is the notifier's own process: the admin app never faces respondents
    and loads nothing of the notifier, also once built."""
    code = ("import sys; from control_plane.api import create_app; create_app(); "
            "sys.exit(' '.join(m for m in sys.modules if m.split('.')[0] == 'notifier') or None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env={
                              **os.environ, "HOOKSTREAM_VAR_DIR": str(tmp_path / "var"),
                              "HOOKSTREAM_DATABASE_URL": f"sqlite:///{tmp_path}/admin.db"})
    assert done.returncode == 0, done.stderr
