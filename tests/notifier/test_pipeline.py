"""The whole loop on real parts: admin API and ingress (uvicorn, in process), the streams
worker (`hookstream worker`, a subprocess), the notifier, a real aiosmtpd server.

- A webhook for an automation with a delay of 1 day (a day shortened to a few seconds)
  gives a mail with the mapped values, after `due_at` and not before, whose personal link
  answers 200.
- Ten bad records in a row disable the automation; ingress then answers 409; the error
  recipients' mail says why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from control_plane.api import create_app
from core.settings import Settings
from hookstream.local.kafka import free_port
from hookstream.local.smtp_sink import SmtpSink
from ingress.app import create_app as create_ingress
from notifier import survey_page
from notifier.app import Notifier

from .conftest import ADMIN_TOKEN, FAST, Bus, wait_for
from .test_auto_disable import served

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
DAY_SECONDS = 4.0


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "HOOKSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "HOOKSTREAM_TOPIC_PREFIX": settings.topic_prefix,
           "HOOKSTREAM_TOPIC_PARTITIONS": str(settings.topic_partitions),
           "HOOKSTREAM_DAY_SECONDS": str(DAY_SECONDS), "HOOKSTREAM_WORKER_PORT": str(free_port()),
           "HOOKSTREAM_VAR_DIR": str(tmp_path / "var")}
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "hookstream.cli", "worker", "--loglevel",
                             "warn"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


async def test_webhook_to_mail_and_bad_records_to_disabled(
        settings: Settings, smtp: SmtpSink, worker: subprocess.Popen[bytes],
        tmp_path: Path, bus: Bus) -> None:
    ingress_port = free_port()
    ingress_url = f"http://127.0.0.1:{ingress_port}"
    settings = settings.model_copy(update={"ingress_port": ingress_port})
    async with served(create_app(settings), settings.admin_port), \
            httpx.AsyncClient(base_url=settings.admin_url, timeout=10,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        automation = await _seed(admin)
        aid, key = automation["id"], automation["api_key"]
        async with served(create_ingress(settings), ingress_port), \
                httpx.AsyncClient(base_url=ingress_url, timeout=10,
                                  headers={"X-API-Key": key}) as ingress, \
                Notifier(settings, tuning=FAST, group_id="notifier-pipeline",
                         migrate_db=False, http=False) as notifier:
            await notifier.wait_running()
            r = await _post_when_ready(ingress, aid, {"customer": {
                "email": "ann@example.com", "name": "Ann"}, "age": "42"}, worker, tmp_path)
            assert r.status_code == 202, r.text
            posted = time.time()

            mails = await wait_for(smtp.messages, timeout=60, what="the invitation mail")
            [mail] = mails
            # The sink names each file by the nanosecond it accepted the mail.
            accepted = int(smtp.files()[0].name.split("-")[0]) / 1e9
            [due] = await bus.read(bus.topics.due, "InvitationRequested", lambda xs: len(xs) >= 1)
            assert due["delay_days"] == 1
            assert due["due_at"].timestamp() - due["received_at"].timestamp() == DAY_SECONDS
            assert accepted >= due["due_at"].timestamp(), "mailed before due_at"
            assert accepted - posted < DAY_SECONDS + 15
            assert mail["To"] == "ann@example.com"
            text = mail.get_body(("plain",)).get_content()
            assert "Dear Ann, age 42" in text
            link = re.search(rf"{re.escape(settings.survey_base_url)}/(\S+)", text)
            assert link is not None
            page_app = survey_page.create_app(settings)
            async with page_app.router.lifespan_context(page_app), httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=page_app),
                    base_url="http://survey") as pages:
                page = await pages.get(f"/s/{link.group(1)}")
            assert page.status_code == 200 and "Customer satisfaction" in page.text

            # Ten bad records in a row (age is not a number): disabled, told, refused.
            bad = [{"customer": {"email": f"p{i}@example.com"}, "age": "old"} for i in range(10)]
            r = await ingress.post(f"/v1/hooks/{aid}", json=bad)
            assert r.status_code == 202, r.text
            notice = await wait_for(lambda: [m for m in smtp.messages()
                                             if "was disabled" in str(m["Subject"])],
                                    timeout=60, what="the disabled notice")
            body = notice[0].get_body(("plain",)).get_content()
            assert "10 consecutive failures" in body and "type_mismatch" in body
            assert f"hookstream automations enable {aid}" in body
            assert "p0@example.com" not in body  # no respondent data in alerts
            r = await admin.get(f"/v1/automations/{aid}")
            assert r.json()["enabled"] is False
            refused = await wait_for_status(ingress, aid, 409)
            assert refused.json()["error"] == "automation_disabled"


async def _seed(admin: httpx.AsyncClient) -> dict:
    r = await admin.post("/v1/surveys", json={"name": "Customer satisfaction"})
    survey = r.json()
    for var in ({"name": "name", "type": "text"}, {"name": "age", "type": "number"}):
        r = await admin.post(f"/v1/surveys/{survey['id']}/variables", json=var)
        assert r.status_code == 201, r.text
    r = await admin.post("/v1/messages", json={
        "name": "Invite", "subject": "Your opinion, {{ name }}",
        "body": "Dear {{ name }}, age {{ age }}.\n\nPlease answer: {{ survey_link }}\n"})
    assert r.status_code == 201, r.text
    r = await admin.post("/v1/automations", json={
        "name": "Webshop orders", "survey_id": survey["id"], "message_id": r.json()["id"],
        "email_field": "customer.email",
        "fields": {"mode": "include", "paths": ["customer.email", "customer.name", "age"]},
        "mapping": [{"field": "customer.name", "variable": "name"},
                    {"field": "age", "variable": "age"}],
        "delay_days": 1, "enabled": True,
        "error_notifications": {"enabled": True, "recipients": ["ops@example.com"]}})
    assert r.status_code == 201, r.text
    return r.json()


async def _post_when_ready(ingress: httpx.AsyncClient, aid: str, body: dict,
                           worker: subprocess.Popen[bytes], tmp_path: Path) -> httpx.Response:
    async def ready() -> httpx.Response | None:
        r = await ingress.post(f"/v1/hooks/{aid}", json=body)
        return None if r.status_code == 503 else r

    for _ in range(300):
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        r = await ready()
        if r is not None:
            return r
        await _sleep(0.1)
    raise AssertionError("ingress never became ready")


async def wait_for_status(client: httpx.AsyncClient, aid: str, status: int) -> httpx.Response:
    for _ in range(100):
        r = await client.post(f"/v1/hooks/{aid}", json={"customer": {"email": "z@example.com"}})
        if r.status_code == status:
            return r
        await _sleep(0.1)
    raise AssertionError(f"ingress never answered {status}; last {r.status_code} {r.text}")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
