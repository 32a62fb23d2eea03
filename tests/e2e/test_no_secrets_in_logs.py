"""No secret and no respondent data in any service's log (issue 15, item 4).

The whole pipeline runs as real processes (admin API, ingress, worker, notifier, survey page;
`hookstream.up.Stack`, each process's stdout and stderr in its own file) against the session's
broker and an SMTP server that requires AUTH. The test rotates the automation's API key and
uses both keys, sends respondents' addresses through, opens their survey links (on the survey
page and, as a careless respondent might, on the admin's address), puts a key in a query
string, and then searches every line every service wrote for each secret: none is there.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.demo import seed_demo
from core.settings import Settings
from hookstream.local.kafka import free_port
from hookstream.local.smtp_sink import SmtpSink
from hookstream.up import Stack

pytestmark = pytest.mark.kafka

ADMIN_TOKEN = "e2e-admin-token-Zq8hT2mK"
NOTIFIER_TOKEN = "e2e-notifier-token-Wc4nP9sL"
SECRETS_KEY = "e2e-secrets-key-Hy7vB3xR"
SMTP_USER = "hookstream-mailer"
SMTP_PASSWORD = "smtp-pa55word-Jf6tQ1dN"
RESPONDENTS = ["ada.secret-e2e@example.com", "bob.secret-e2e@example.org"]
NOT_AN_ADDRESS = "carol.secret-e2e.example.net"  # no @: a dead-letter, not a mail


def _post(url: str, body: dict[str, str], headers: dict[str, str]) -> int:
    return httpx.post(url, json=body, timeout=10, headers=headers).status_code


def test_no_secret_or_address_in_any_log(kafka_bootstrap: str, topic_prefix: str,
                                         tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the children's working directory: nothing lands elsewhere
    ports = {name: free_port() for name in ("ingress", "admin", "worker", "notifier", "survey")}
    var = tmp_path / "var"
    admin_url = f"http://127.0.0.1:{ports['admin']}"
    with SmtpSink(tmp_path / "mail", auth=(SMTP_USER, SMTP_PASSWORD),
                  auth_required=True) as smtp:
        env = {
            "HOOKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "HOOKSTREAM_TOPIC_PREFIX": topic_prefix,
            "HOOKSTREAM_TOPIC_PARTITIONS": "1",
            "HOOKSTREAM_VAR_DIR": str(var),
            "HOOKSTREAM_DATABASE_URL": f"sqlite:///{var}/hookstream.db",
            "HOOKSTREAM_INGRESS_PORT": str(ports["ingress"]),
            "HOOKSTREAM_ADMIN_PORT": str(ports["admin"]),
            "HOOKSTREAM_ADMIN_URL": admin_url,
            "HOOKSTREAM_SURVEY_PORT": str(ports["survey"]),
            "HOOKSTREAM_SURVEY_BASE_URL": f"http://127.0.0.1:{ports['survey']}/s",
            "HOOKSTREAM_WORKER_PORT": str(ports["worker"]),
            "HOOKSTREAM_NOTIFIER_PORT": str(ports["notifier"]),
            "HOOKSTREAM_SMTP_URL": smtp.url,
            "HOOKSTREAM_ADMIN_TOKEN": ADMIN_TOKEN,
            "HOOKSTREAM_NOTIFIER_ADMIN_TOKEN": NOTIFIER_TOKEN,
            "HOOKSTREAM_SECRETS_KEY": SECRETS_KEY,
        }
        assert SMTP_PASSWORD in smtp.url
        stack = Stack(Settings(var_dir=var), env=env)
        secrets: dict[str, str] = {
            "admin token": ADMIN_TOKEN, "notifier token": NOTIFIER_TOKEN,
            "secrets key": SECRETS_KEY, "SMTP password": SMTP_PASSWORD,
            **{f"respondent {i}": a for i, a in enumerate(RESPONDENTS)},
            "respondent without @": NOT_AN_ADDRESS}
        try:
            admin = stack.spawn("admin", "admin")
            stack.wait_http(admin, f"{admin_url}/readyz", timeout=120)
            automation_id, first_key = seed_demo(admin_url, ADMIN_TOKEN)
            r = httpx.post(f"{admin_url}/v1/automations/{automation_id}/keys", timeout=10,
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert r.status_code in (200, 201), r.text
            second_key = r.json()["api_key"]
            secrets.update({"first API key": first_key, "second API key": second_key})

            ingress = stack.spawn("ingress", "ingress")
            worker = stack.spawn("worker", "worker")
            notifier = stack.spawn("notifier", "notifier")
            survey = stack.spawn("survey-page", "survey-page")
            for child, port in ((ingress, ports["ingress"]), (worker, ports["worker"]),
                                (notifier, ports["notifier"]), (survey, ports["survey"])):
                stack.wait_http(child, f"http://127.0.0.1:{port}/readyz", timeout=120)

            hook = f"http://127.0.0.1:{ports['ingress']}/v1/hooks/{automation_id}"
            # Both keys work during the grace period; one in each header the ingress reads.
            assert _post(hook, {"email": RESPONDENTS[0], "first_name": "Ada"},
                         {"X-API-Key": first_key}) == 202
            assert _post(hook, {"email": RESPONDENTS[1], "first_name": "Bob"},
                         {"Authorization": f"Bearer {second_key}"}) == 202
            assert _post(hook, {"email": NOT_AN_ADDRESS, "first_name": "Carol"},
                         {"X-API-Key": second_key}) == 202
            # Careless integrators: a key in the query string, a wrong key.
            _post(f"{hook}?api_key={second_key}", {"email": RESPONDENTS[0]},
                  {"X-API-Key": "wrong-" + first_key})

            # The invitations; the error alert the refused record sends to the automation's
            # recipients may come before, after or between them.
            def invitations() -> list[Any]:
                return [m for m in smtp.messages() if str(m["To"]) in RESPONDENTS]

            deadline = time.monotonic() + 60
            while len(invitations()) < 2:
                assert time.monotonic() < deadline, "no mails within 60 s"
                time.sleep(0.3)
            mails = invitations()
            assert sorted(str(m["To"]) for m in mails) == sorted(RESPONDENTS)
            tokens = []
            for m in mails:
                text = m.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
                link = re.search(r"http://127\.0\.0\.1:\d+/s/([A-Za-z0-9_-]+)", text)
                assert link, text
                tokens.append(link.group(1))
                page = httpx.get(link.group(0), timeout=10)
                assert page.status_code == 200 and str(m["To"]) in page.text
                # The same link on the admin's address: a 404, and an access log line.
                assert httpx.get(f"{admin_url}/s/{link.group(1)}", timeout=10).status_code \
                    == 404
            secrets.update({f"survey token {i}": t for i, t in enumerate(tokens)})
            # A key in an admin query string (a search for it), and the notifier's token used
            # where it is refused.
            r = httpx.get(f"{admin_url}/v1/automations", params={"name": second_key},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
            assert r.status_code == 200
            r = httpx.get(f"{admin_url}/v1/automations",
                          headers={"Authorization": f"Bearer {NOTIFIER_TOKEN}"}, timeout=10)
            assert r.status_code == 403
            time.sleep(2)  # the invalid address's dead letter and the outcomes get logged
        finally:
            stack.stop()

    logs = sorted((var / "logs").glob("*.log"))
    assert {p.stem for p in logs} == {"admin", "ingress", "worker", "notifier", "survey-page"}
    found = []
    total = 0
    for path in logs:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            total += 1
            for what, secret in secrets.items():
                if secret in line:
                    found.append(f"{path.name}:{n}: {what}: {line}")
    assert not found, "\n".join(found)
    admin_log = (var / "logs" / "admin.log").read_text()
    # The search is meaningful: the access log was on and wrote the requests, redacted.
    assert '"GET /s/[redacted] HTTP/1.1" 404' in admin_log, admin_log
    assert '"GET /v1/automations?[redacted] HTTP/1.1" 200' in admin_log, admin_log
    print(f"{len(logs)} log files, {total} lines, {len(secrets)} secrets: none found")
