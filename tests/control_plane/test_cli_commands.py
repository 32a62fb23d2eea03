"""Every operator command of the CLI, one test each, against one running `hookstream admin`
(its own process, real Kafka, a SQLite store): what it prints for a person, its `--json`, and
that the change reached the API."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, insert
from typer.testing import CliRunner

from core.settings import get_settings
from hookstream.cli import app
from hookstream.local.kafka import free_port
from notifier.migrations import migrate as migrate_notifier
from notifier.models import AutomationErrorRow
from tests.control_plane.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.kafka


class Admin:
    def __init__(self, url: str, db_url: str) -> None:
        self.url = url
        self.db_url = db_url
        self.http = httpx.Client(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def api(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, path, json=body)
        assert r.status_code < 400, r.text
        return r.json() if r.content else None

    def survey(self) -> dict[str, Any]:
        return self.api("POST", "/v1/surveys", {"name": f"Survey {uuid.uuid4().hex[:6]}",
                                                "variables": [{"name": "city",
                                                               "type": "text"}]})

    def message(self) -> dict[str, Any]:
        return self.api("POST", "/v1/messages", {"name": f"Invite {uuid.uuid4().hex[:6]}",
                                                 "subject": "Hello",
                                                 "body": "{{ city }}: {{ survey_link }}"})

    def automation(self, **body: Any) -> dict[str, Any]:
        return self.api("POST", "/v1/automations", {
            "name": f"Orders {uuid.uuid4().hex[:6]}", "survey_id": self.survey()["id"],
            "message_id": self.message()["id"], "email_field": "email",
            "fields": {"mode": "exclude", "paths": []},
            "mapping": [{"field": "city", "variable": "city"}], **body})


@pytest.fixture(scope="module")
def admin(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    tmp = tmp_path_factory.mktemp("cli")
    port = free_port()
    db_url = f"sqlite:///{tmp}/var/hookstream.db"
    env = {"HOOKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "HOOKSTREAM_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}.",
           "HOOKSTREAM_TOPIC_PARTITIONS": "1", "HOOKSTREAM_ADMIN_TOKEN": ADMIN_TOKEN,
           "HOOKSTREAM_DATABASE_URL": db_url, "HOOKSTREAM_ADMIN_URL": f"http://127.0.0.1:{port}"}
    log = (tmp / "admin.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "hookstream.cli", "admin", "--port",
                             str(port), "--log-level", "warning"], env={**os.environ, **env},
                            stdout=log, stderr=subprocess.STDOUT)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        get_settings.cache_clear()
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp / "admin.log").read_text()
                try:
                    if httpx.get(f"{env['HOOKSTREAM_ADMIN_URL']}/readyz",
                                 timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass  # not listening yet
                assert time.monotonic() < deadline, "admin API not ready within 60 s"
                time.sleep(0.2)
            yield Admin(env["HOOKSTREAM_ADMIN_URL"], db_url)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            get_settings.cache_clear()


def cli(*args: str, ok: bool = True, stdin: str | None = None) -> Any:
    r = CliRunner().invoke(app, list(args), input=stdin)
    if ok:
        assert r.exit_code == 0, r.output
    return r


def as_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json").output)


# --- surveys ---------------------------------------------------------------------------------

def test_surveys_create(admin: Admin) -> None:
    r = cli("surveys", "create", "--name", "NPS 2026", "--variable", "city:text",
            "--variable", "plan:choice:free|pro")
    created = json.loads(r.output)
    assert created["name"] == "NPS 2026"
    assert created["variables"][1] == {"name": "plan", "type": "choice",
                                       "options": ["free", "pro"]}
    assert admin.api("GET", f"/v1/surveys/{created['id']}")["name"] == "NPS 2026"
    bad = cli("surveys", "create", "--name", "x", "--variable", "plan:choice", ok=False)
    assert bad.exit_code == 1 and "needs at least one option" in bad.output


def test_surveys_list(admin: Admin) -> None:
    s = admin.survey()
    r = cli("surveys", "list", "--name", s["name"])
    assert r.output.strip() == f"{s['id']}  {s['name']}  [city (text)]"
    assert [x["id"] for x in as_json("surveys", "list", "--name", s["name"])] == [s["id"]]


def test_surveys_show(admin: Admin) -> None:
    s = admin.survey()
    r = cli("surveys", "show", s["id"])
    assert f"name:      {s['name']}" in r.output and "city (text)" in r.output
    assert as_json("surveys", "show", s["id"]) == s
    missing = cli("surveys", "show", "nope", ok=False)
    assert missing.exit_code == 1 and "not_found" in missing.output


def test_surveys_update(admin: Admin) -> None:
    s = admin.survey()
    r = cli("surveys", "update", s["id"], "--name", "Renamed")
    assert json.loads(r.output)["name"] == "Renamed"
    assert admin.api("GET", f"/v1/surveys/{s['id']}")["name"] == "Renamed"


def test_surveys_delete(admin: Admin) -> None:
    s = admin.survey()
    refused = cli("surveys", "delete", s["id"], ok=False, stdin="n\n")
    assert refused.exit_code == 1
    assert admin.http.get(f"/v1/surveys/{s['id']}").status_code == 200
    assert f"{s['id']} deleted" in cli("surveys", "delete", s["id"], "--yes").output
    assert admin.http.get(f"/v1/surveys/{s['id']}").status_code == 404


# --- variables -------------------------------------------------------------------------------

def test_variables_create(admin: Admin) -> None:
    s = admin.survey()
    r = cli("variables", "create", s["id"], "tier", "choice", "--option", "a", "--option", "b")
    assert json.loads(r.output) == {"name": "tier", "type": "choice", "options": ["a", "b"]}
    names = [v["name"] for v in admin.api("GET", f"/v1/surveys/{s['id']}/variables")]
    assert names == ["city", "tier"]


def test_variables_list(admin: Admin) -> None:
    s = admin.survey()
    admin.api("POST", f"/v1/surveys/{s['id']}/variables", {"name": "age", "type": "number"})
    assert cli("variables", "list", s["id"]).output.splitlines() == ["city  text",
                                                                      "age  number"]
    assert [v["name"] for v in as_json("variables", "list", s["id"])] == ["city", "age"]


def test_variables_show(admin: Admin) -> None:
    s = admin.survey()
    assert "type:    text" in cli("variables", "show", s["id"], "city").output
    assert as_json("variables", "show", s["id"], "city") == {"name": "city", "type": "text",
                                                             "options": []}
    assert cli("variables", "show", s["id"], "nope", ok=False).exit_code == 1


def test_variables_update(admin: Admin) -> None:
    s = admin.survey()
    r = cli("variables", "update", s["id"], "city", "--type", "choice", "--option", "Utrecht")
    assert json.loads(r.output) == {"name": "city", "type": "choice", "options": ["Utrecht"]}


def test_variables_delete(admin: Admin) -> None:
    s = admin.survey()
    cli("variables", "delete", s["id"], "city", "--yes")
    assert admin.api("GET", f"/v1/surveys/{s['id']}/variables") == []


# --- messages --------------------------------------------------------------------------------

def test_messages_create(admin: Admin, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("Dear respondent,\n\n{{ survey_link }}\n")
    r = cli("messages", "create", "--name", "Welcome", "--subject", "Hi", "--body-file",
            str(body))
    created = json.loads(r.output)
    assert created["body"] == body.read_text()
    assert admin.api("GET", f"/v1/messages/{created['id']}")["subject"] == "Hi"


def test_messages_list(admin: Admin) -> None:
    msg = admin.message()
    assert cli("messages", "list", "--name", msg["name"]).output.strip() == \
        f"{msg['id']}  {msg['name']}  subject: Hello"
    assert [x["id"] for x in as_json("messages", "list", "--name", msg["name"])] == [msg["id"]]


def test_messages_show(admin: Admin) -> None:
    msg = admin.message()
    r = cli("messages", "show", msg["id"])
    assert "subject: Hello" in r.output and r.output.rstrip().endswith(msg["body"])
    assert as_json("messages", "show", msg["id"]) == msg


def test_messages_update(admin: Admin) -> None:
    msg = admin.message()
    r = cli("messages", "update", msg["id"], "--subject", "Quick question")
    assert json.loads(r.output)["subject"] == "Quick question"
    assert admin.api("GET", f"/v1/messages/{msg['id']}")["body"] == msg["body"]


def test_messages_delete(admin: Admin) -> None:
    msg = admin.message()
    cli("messages", "delete", msg["id"], "-y")
    assert admin.http.get(f"/v1/messages/{msg['id']}").status_code == 404


# --- automations -----------------------------------------------------------------------------

def test_automations_create(admin: Admin) -> None:
    s, msg = admin.survey(), admin.message()
    r = cli("automations", "create", "--name", "Signed", "--survey-id", s["id"],
            "--message-id", msg["id"], "--email-field", "email", "--map", "city=city",
            "--auth", "signature")
    created = json.loads(r.output)
    assert created["api_key"] and created["signing_secret"].startswith("whsec_")
    assert created["authentication"]["mode"] == "signature"


def test_automations_list(admin: Admin) -> None:
    a = admin.automation(enabled=False)
    line = f"{a['id']}  disabled  v1  {a['name']}"
    assert cli("automations", "list", "--name", a["name"]).output.strip() == line
    assert cli("automations", "list", "--name", a["name"], "--enabled").output == ""
    assert [x["id"] for x in as_json("automations", "list", "--name", a["name"])] == [a["id"]]


def test_automations_show(admin: Admin) -> None:
    a = admin.automation()
    r = cli("automations", "show", a["id"])
    assert "status:" in r.output and "mapping:         city=city" in r.output
    assert "auth:            key" in r.output and a["api_key"] not in r.output
    shown = as_json("automations", "show", a["id"])
    assert shown["id"] == a["id"] and "api_key" not in shown


def test_automations_update(admin: Admin, tmp_path: Path) -> None:
    a = admin.automation()
    r = cli("automations", "update", a["id"], "--delay-days", "2", "--filters",
            '{"all": [{"field": "city", "op": "eq", "value": "Utrecht"}]}')
    assert json.loads(r.output)["delay_days"] == 2
    # A file from `show --json`, edited, goes back as is (read-only fields are dropped).
    shown = as_json("automations", "show", a["id"])
    spec = tmp_path / "a.json"
    spec.write_text(json.dumps({**shown, "name": "Edited"}))
    r = cli("automations", "update", a["id"], "--file", str(spec))
    got = admin.api("GET", f"/v1/automations/{a['id']}")
    assert (got["name"], got["delay_days"], got["filters"]["all"][0]["value"]) == (
        "Edited", 2, "Utrecht")
    bad = cli("automations", "update", a["id"], "--map", "city=nope", ok=False)
    assert bad.exit_code == 1 and "mapping[0].variable" in bad.output


def test_automations_delete(admin: Admin) -> None:
    a = admin.automation()
    assert f"{a['id']} deleted" in cli("automations", "delete", a["id"], stdin="y\n").output
    assert admin.http.get(f"/v1/automations/{a['id']}").status_code == 404


def test_automations_disable(admin: Admin) -> None:
    a = admin.automation()
    assert "disabled (version 2)" in cli("automations", "disable", a["id"], "--reason",
                                         "maintenance").output
    got = admin.api("GET", f"/v1/automations/{a['id']}")
    assert (got["enabled"], got["disabled_reason"]) == (False, "maintenance")


def test_automations_enable(admin: Admin) -> None:
    a = admin.automation(enabled=False)
    assert "enabled (version 2)" in cli("automations", "enable", a["id"]).output
    got = admin.api("GET", f"/v1/automations/{a['id']}")
    assert (got["enabled"], got["disabled_reason"]) == (True, None)


def test_automations_rotate_key(admin: Admin) -> None:
    a = admin.automation()
    r = cli("automations", "rotate-key", a["id"])
    assert "new API key: " in r.output and "the previous key works until" in r.output
    assert len(admin.api("GET", f"/v1/automations/{a['id']}")["api_keys"]) == 2


def test_automations_rotate_secret(admin: Admin) -> None:
    a = admin.automation()
    r = cli("automations", "rotate-secret", a["id"])
    first = r.output.split("new signing secret: ")[1].split()[0]
    assert first.startswith("whsec_") and "previous" not in r.output
    given = "whsec_" + base64.b64encode(b"s" * 32).decode()  # the sender's own
    r = cli("automations", "rotate-secret", a["id"], "--secret", given)
    assert f"new signing secret: {given}" in r.output
    assert "the previous secret verifies until" in r.output
    got = admin.api("GET", f"/v1/automations/{a['id']}")["authentication"]
    assert len(got["signing_secrets"]) == 2 and first not in json.dumps(got)
    r = cli("automations", "update", a["id"], "--auth", "both")
    assert json.loads(r.output)["authentication"]["mode"] == "both"


def test_automations_recipients(admin: Admin) -> None:
    a = admin.automation()
    assert cli("automations", "recipients", a["id"]).output.strip() == \
        "error notifications off: nobody"
    r = cli("automations", "recipients", a["id"], "--add", "ops@example.com", "--add",
            "lead@example.com", "--on")
    assert r.output.strip() == "error notifications on: ops@example.com, lead@example.com"
    assert as_json("automations", "recipients", a["id"], "--remove", "ops@example.com") == {
        "enabled": True, "recipients": ["lead@example.com"]}
    got = admin.api("GET", f"/v1/automations/{a['id']}")["error_notifications"]
    assert got == {"enabled": True, "recipients": ["lead@example.com"]}


def test_automations_errors(admin: Admin) -> None:
    a = admin.automation()
    assert cli("automations", "errors", a["id"]).output.strip() == "no errors"
    migrate_notifier(admin.db_url)  # the notifier owns the table; here no notifier runs
    now = datetime.now(UTC).replace(tzinfo=None)
    engine = create_engine(admin.db_url)
    with engine.begin() as conn:
        conn.execute(insert(AutomationErrorRow.__table__), [
            {"id": str(uuid.uuid4()), "automation_id": a["id"], "kind": "type_mismatch",
             "detail": "age is no number", "source": "streams", "field": "age",
             "event_id": "e1", "record_index": 0, "invitation_id": None,
             "at": now - timedelta(minutes=5), "count": 1, "since": None},
            {"id": str(uuid.uuid4()), "automation_id": a["id"],
             "kind": "refused_invalid_api_key", "detail": "41 webhook requests were refused",
             "source": "ingress", "field": None, "event_id": None, "record_index": None,
             "invitation_id": None, "at": now, "count": 41,
             "since": now - timedelta(minutes=1)}])
    engine.dispose()
    lines = cli("automations", "errors", a["id"]).output.splitlines()
    assert "ingress  refused_invalid_api_key x41: 41 webhook requests" in lines[0]
    assert "streams  type_mismatch field age: age is no number" in lines[1]
    items = as_json("automations", "errors", a["id"], "--kind", "refused_invalid_api_key")
    assert [(e["kind"], e["count"]) for e in items] == [("refused_invalid_api_key", 41)]


def test_automations_dry_run(admin: Admin, tmp_path: Path) -> None:
    a = admin.automation(filters={"all": [{"field": "city", "op": "ne", "value": "Paris"}]})
    sample = tmp_path / "sample.ndjson"
    sample.write_text('{"email": "ann@example.com", "city": "Utrecht"}\n'
                      '{"email": "bob@example.com", "city": "Paris"}\n{"city": "Oslo"}\n')
    r = cli("automations", "dry-run", a["id"], str(sample))
    lines = r.output.splitlines()
    assert lines[0] == "3 record(s): 1 accepted, 1 filtered out, 1 rejected"
    assert lines[1] == "record 0: accepted, email ann@example.com, city='Utrecht'"
    assert lines[2].startswith("record 1: filtered_out (city ne")
    assert lines[3].startswith("record 2: rejected") and "error missing_email" in lines[4]
    answer = as_json("automations", "dry-run", a["id"], str(sample))
    assert answer["published"] is False and answer["dry_run"]["summary"]["records"] == 3
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    r = cli("automations", "dry-run", a["id"], str(bad), ok=False)
    assert r.exit_code == 1 and "not valid JSON" in r.output
