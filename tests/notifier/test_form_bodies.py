"""Form bodies on the whole real pipeline: the admin API and ingress (uvicorn, in process), the
streams worker (`hookstream worker`, a subprocess), the notifier and an aiosmtpd server.

A Twilio-shaped URL-encoded body, a Mailchimp-shaped one with bracketed keys and a multipart
body from a form builder each reach their automation, are mapped onto background variables
(a number and a date among them) and become mailed invitations whose stored background data
has the typed values. A multipart body with a file part is refused with 415, a form with
broken percent-encoding with 400; a form the worker cannot map goes to the dead-letter topic
as it was received, content type and all.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from control_plane.api import create_app
from core.settings import Settings
from hookstream.local.kafka import free_port
from hookstream.local.smtp_sink import SmtpSink
from ingress.app import create_app as create_ingress
from notifier.app import Notifier
from tests.automations.test_forms import MULTIPART, multipart

from .conftest import ADMIN_TOKEN, FAST, Bus, wait_for
from .test_auto_disable import served
from .test_pipeline import worker  # noqa: F401 - the fixture: `hookstream worker` by pid

pytestmark = pytest.mark.kafka
FORM = "application/x-www-form-urlencoded"

TWILIO = (  # an SMS reply to "text us your e-mail address"; OptInDate added by the Studio flow
    b"ToCountry=NL&ToState=&SmsMessageSid=SM5a1c0d4e8f&NumMedia=0&ToCity=&FromZip="
    b"&SmsSid=SM5a1c0d4e8f&FromState=&SmsStatus=received&FromCity=&Body=ann%40example.com"
    b"&FromCountry=NL&To=%2B3197010203040&ToZip=&NumSegments=2&MessageSid=SM5a1c0d4e8f"
    b"&AccountSid=AC0123456789abcdef&From=%2B31612345678&ApiVersion=2010-04-01"
    b"&OptInDate=2024-03-05")
MAILCHIMP = (
    b"type=subscribe&fired_at=2024-03-26+21%3A35%3A57&data%5Bid%5D=8a25ff1d98"
    b"&data%5Blist_id%5D=a6b5da1054&data%5Bemail%5D=bob%40example.com"
    b"&data%5Bemail_type%5D=html&data%5Bmerges%5D%5BEMAIL%5D=bob%40example.com"
    b"&data%5Bmerges%5D%5BFNAME%5D=Bob&data%5Bmerges%5D%5BLNAME%5D=Jansen"
    b"&data%5Bmerges%5D%5BORDERS%5D=17&data%5Bmerges%5D%5BINTERESTS%5D=Books"
    b"&data%5Bmerges%5D%5BINTERESTS%5D=Music&data%5Bip_opt%5D=10.20.10.30")
UNUSED_UPLOAD = '; filename=""\r\nContent-Type: application/octet-stream\r\n'
FORM_BUILDER = multipart(
    [("form_id", "241234567890"), ("submission_id", "5829301"),
     ("fields[name][first]", "Cy"), ("fields[name][last]", "de Vries"),
     ("fields[email]", "cy@example.com"), ("fields[age]", "36"),
     ("fields[visit_date]", "05-03-2024"), ("fields[attachment]", b"")],
    extra={"fields[attachment]": UNUSED_UPLOAD})


async def _setup(admin: httpx.AsyncClient) -> tuple[str, dict[str, dict[str, Any]]]:
    r = await admin.post("/v1/surveys", json={"name": "Customer satisfaction"})
    assert r.status_code == 201, r.text
    survey = r.json()["id"]
    for name, type_ in (("name", "text"), ("phone", "text"), ("count", "number"),
                        ("day", "date")):
        r = await admin.post(f"/v1/surveys/{survey}/variables",
                             json={"name": name, "type": type_})
        assert r.status_code == 201, r.text
    r = await admin.post("/v1/messages", json={
        "name": "Invite", "subject": "Your opinion",
        "body": "Hello {{ name }}: {{ count }} on {{ day }}. {{ survey_link }}\n"})
    assert r.status_code == 201, r.text
    message = r.json()["id"]
    shapes = {
        "twilio": ("Body", [("From", "phone"), ("NumSegments", "count"),
                            ("OptInDate", "day")]),
        "mailchimp": ("data.email", [("data.merges.FNAME", "name"),
                                     ("data.merges.ORDERS", "count"), ("fired_at", "day")]),
        "builder": ("fields.email", [("fields.name.first", "name"), ("fields.age", "count"),
                                     ("fields.visit_date", "day")]),
    }
    automations = {}
    for shape, (email_field, mapping) in shapes.items():
        r = await admin.post("/v1/automations", json={
            "name": f"From {shape}", "survey_id": survey, "message_id": message,
            "email_field": email_field, "fields": {"mode": "exclude", "paths": []},
            "mapping": [{"field": f, "variable": v} for f, v in mapping],
            "delay_days": 0, "enabled": True,
            "error_notifications": {"enabled": False, "recipients": []}})
        assert r.status_code == 201, r.text
        automations[shape] = r.json()
    return survey, automations


async def _post_when_ready(ingress: httpx.AsyncClient, aid: str, key: str, body: bytes,
                           content_type: str, proc: subprocess.Popen[bytes],
                           tmp_path: Path) -> httpx.Response:
    """Posts once the ingress has the automation (503 not_ready or 404 until then)."""
    for _ in range(300):
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        r = await ingress.post(f"/v1/hooks/{aid}", content=body,
                               headers={"Content-Type": content_type, "X-API-Key": key})
        if r.status_code not in (503, 404):
            return r
        await asyncio.sleep(0.1)
    raise AssertionError("ingress never became ready")


async def _read_committed(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """The first record(s) on `topic` as a read_committed reader sees them (the worker
    writes in transactions)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                records = [r for rs in batches.values() for r in rs]
                if records:
                    return records
    finally:
        await consumer.stop()


async def test_form_bodies_become_invitations_with_typed_values(
        settings: Settings, smtp: SmtpSink, worker: subprocess.Popen[bytes],  # noqa: F811
        tmp_path: Path, bus: Bus) -> None:
    ingress_port = free_port()
    settings = settings.model_copy(update={"ingress_port": ingress_port})
    async with served(create_app(settings), settings.admin_port), \
            httpx.AsyncClient(base_url=settings.admin_url, timeout=10,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        survey, automations = await _setup(admin)
        async with served(create_ingress(settings), ingress_port), \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ingress_port}",
                                  timeout=10) as ingress, \
                Notifier(settings, tuning=FAST, group_id="notifier-forms",
                         migrate_db=False, http=False) as notifier:
            await notifier.wait_running()
            sent = {"twilio": (TWILIO, FORM), "mailchimp": (MAILCHIMP, FORM),
                    "builder": (FORM_BUILDER, MULTIPART)}
            for shape, (body, ctype) in sent.items():
                a = automations[shape]
                r = await _post_when_ready(ingress, a["id"], a["api_key"], body, ctype,
                                           worker, tmp_path)
                assert r.status_code == 202 and r.json()["accepted"] == 1, (shape, r.text)

            # Refused at the door, with the documented errors.
            builder = automations["builder"]
            with_file = multipart([("fields[email]", "dee@example.com"), ("fields[cv]", b"%PDF")],
                                  extra={"fields[cv]": '; filename="cv.pdf"\r\n'
                                                       "Content-Type: application/pdf\r\n"})
            r = await ingress.post(f"/v1/hooks/{builder['id']}", content=with_file, headers={
                "Content-Type": MULTIPART, "X-API-Key": builder["api_key"]})
            assert r.status_code == 415, r.text
            assert r.json()["error"] == "unsupported_media_type"
            assert "field 'fields[cv]'" in r.json()["detail"]
            twilio = automations["twilio"]
            r = await ingress.post(f"/v1/hooks/{twilio['id']}",
                                   content=b"Body=eve%40example.com&From=%2B3161234567%8",
                                   headers={"Content-Type": FORM, "X-API-Key": twilio["api_key"]})
            assert r.status_code == 400, r.text
            assert r.json()["error"] == "bad_form" and "byte 41" in r.json()["detail"]

            # A form the worker cannot map (the date is not one): a dead letter, as received.
            mailchimp = automations["mailchimp"]
            bad = MAILCHIMP.replace(b"bob%40", b"fay%40").replace(b"2024-03-26", b"someday")
            r = await ingress.post(f"/v1/hooks/{mailchimp['id']}", content=bad, headers={
                "Content-Type": FORM, "X-API-Key": mailchimp["api_key"]})
            assert r.status_code == 202, r.text

            mails = await wait_for(lambda: len(smtp.messages()) >= 3 and smtp.messages(),
                                   timeout=90, what="three invitation mails")
            texts = {m["To"]: m.get_body(("plain",)).get_content() for m in mails}
            assert set(texts) == {"ann@example.com", "bob@example.com", "cy@example.com"}
            assert "Hello Bob: 17 on 2024-03-26." in texts["bob@example.com"]
            assert "Hello Cy: 36 on 2024-03-05." in texts["cy@example.com"]

            due = await bus.read(bus.topics.due, "InvitationRequested", lambda xs: len(xs) >= 3)
            by_email = {d["email"]: d["variables"] for d in due}
            assert by_email == {
                "ann@example.com": {"phone": "+31612345678", "count": 2, "day": "2024-03-05"},
                "bob@example.com": {"name": "Bob", "count": 17, "day": "2024-03-26"},
                "cy@example.com": {"name": "Cy", "count": 36, "day": "2024-03-05"},
            }
            for email, variables in by_email.items():
                r = await admin.get("/v1/respondents",
                                    params={"survey_id": survey, "email": email})
                [respondent] = r.json()["items"]
                assert respondent["variables"] == variables, email

            [dead] = await _read_committed(settings.kafka_bootstrap, bus.topics.dlq)
            headers = dict(dead.headers)
            assert dead.value == bad and headers["content-type"] == FORM.encode()
            assert headers["dlq-reason"] == b"type_mismatch"
    assert len(smtp.messages()) == 3  # nothing for the refused bodies, nor the dead letter
