"""Signed webhooks on the real pipeline: the admin API makes the secret (shown once) and
publishes the sealed snapshot on Kafka; the ingress, reading it from the config topic, takes
signed requests and publishes them on `webhooks.raw`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook

from automations.signing import generate
from control_plane.api import create_app as create_admin
from core.kafka.topics import Topics
from core.settings import Settings
from ingress.app import IngressApp
from tests.ingress.conftest import read_raw, start_app

pytestmark = pytest.mark.kafka

TOKEN = "signed-test-admin-token"
BODY = b'{"email": "ann@example.com", "first_name": "Ann", "country": "NL"}'
JSON = {"Content-Type": "application/json"}


@dataclass
class Stack:
    admin: httpx.AsyncClient
    ingress: httpx.AsyncClient
    app: IngressApp
    settings: Settings
    survey_id: str
    message_id: str

    async def automation(self, **body: Any) -> dict[str, Any]:
        r = await self.admin.post("/v1/automations", json={
            "name": "Signed orders", "survey_id": self.survey_id,
            "message_id": self.message_id, "email_field": "email",
            "fields": {"mode": "exclude", "paths": []},
            "mapping": [{"field": "first_name", "variable": "first_name"},
                        {"field": "country", "variable": None}], **body})
        assert r.status_code == 201, r.text
        created = r.json()
        await self.applied(created["id"], created["version"])
        return created

    async def applied(self, automation_id: str, version: int) -> None:
        async with asyncio.timeout(20):
            while (s := self.app.cache.get(automation_id)) is None or s.version < version:
                await asyncio.sleep(0.05)

    async def post(self, automation_id: str, body: bytes = BODY, test: bool = False,
                   **headers: str) -> httpx.Response:
        url = f"/v1/hooks/{automation_id}" + ("/test" if test else "")
        return await self.ingress.post(url, content=body, headers={**JSON, **headers})


@pytest.fixture
async def stack(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> AsyncIterator[Stack]:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topics.prefix,
                        topic_partitions=2, var_dir=tmp_path,
                        database_url=f"sqlite:///{tmp_path}/control.db",
                        admin_token=SecretStr(TOKEN), secrets_key=SecretStr("test-secrets-key"),
                        key_grace_seconds=3600.0)
    admin_app = create_admin(settings)
    async with admin_app.router.lifespan_context(admin_app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=admin_app), base_url="http://admin",
            headers={"Authorization": f"Bearer {TOKEN}"}) as admin:
        r = await admin.post("/v1/surveys", json={
            "name": "Customer satisfaction", "variables": [{"name": "first_name",
                                                            "type": "text"}]})
        survey_id = r.json()["id"]
        r = await admin.post("/v1/messages", json={"name": "Invite", "subject": "Hi",
                                                   "body": "{{ survey_link }}"})
        message_id = r.json()["id"]
        app, client = await start_app(settings)
        try:
            yield Stack(admin, client, app, settings, survey_id, message_id)
        finally:
            await client.aclose()
            await app.shutdown()


def standard(secret: str, body: bytes = BODY, msg_id: str = "msg_1",
             at: float | None = None) -> dict[str, str]:
    ts = datetime.fromtimestamp(int(time.time() if at is None else at), UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(ts.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, ts, body.decode())}


def error_of(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    return str(r.json()["error"])


async def test_signed_accepted_forged_refused_replays_answered_once(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = await stack.automation(authentication={"mode": "signature"})
    aid, secret = created["id"], created["signing_secret"]
    assert secret.startswith("whsec_")
    assert created["authentication"]["mode"] == "signature"
    assert len(created["authentication"]["signing_secrets"]) == 1
    shown = await stack.admin.get(f"/v1/automations/{aid}")
    assert secret not in shown.text and "signing_secret" not in shown.json()

    # A signed webhook is accepted (no API key needed in this mode) and published as sent.
    signed = standard(secret, msg_id="msg_first")
    first = await stack.post(aid, **signed)
    assert first.status_code == 202, first.text
    # Forged: signed with another secret, or the body changed after signing; unsigned.
    assert error_of(await stack.post(aid, **standard(generate())), 401) \
        == "invalid_signature"
    assert error_of(await stack.post(aid, BODY.replace(b"Ann", b"Eve"), **signed), 401) \
        == "invalid_signature"
    assert error_of(await stack.post(aid, **{"X-API-Key": created["api_key"]}), 401) \
        == "missing_signature"
    assert error_of(await stack.post(aid), 401) == "missing_signature"
    # A replay inside the window is answered like the first and not published again.
    again = await stack.post(aid, **signed)
    assert (again.status_code, again.content) == (202, first.content)
    # A replay outside the window (a request signed six minutes ago) is refused.
    stale = standard(secret, msg_id="msg_captured", at=time.time() - 360)
    assert error_of(await stack.post(aid, **stale), 401) == "timestamp_out_of_range"

    records = await read_raw(stack.settings.kafka_bootstrap, Topics(stack.settings.topic_prefix)
                             .raw, at_least=1)
    assert [(r.key, r.value) for r in records] == [(aid, BODY)]
    assert records[0].headers["request-id"] == first.json()["event_id"].encode()

    # The secret is on no topic and in no log line: the snapshot carries it sealed.
    config = await read_raw(stack.settings.kafka_bootstrap,
                            Topics(stack.settings.topic_prefix).config, at_least=1)
    assert config and all(secret.encode() not in r.value for r in config)
    assert not [r for r in caplog.records if secret in r.getMessage()]


async def test_both_mode_rotation_and_the_test_endpoint(stack: Stack) -> None:
    created = await stack.automation()
    aid, key = created["id"], created["api_key"]
    # Mode both needs a secret first.
    r = await stack.admin.patch(f"/v1/automations/{aid}",
                                json={"authentication": {"mode": "both"}})
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "no_signing_secret"
    r = await stack.admin.post(f"/v1/automations/{aid}/signing-secrets")
    assert r.status_code == 200, r.text
    old = r.json()["signing_secret"]
    assert r.json()["previous_secrets_expire_at"] is None
    r = await stack.admin.patch(f"/v1/automations/{aid}",
                                json={"authentication": {"mode": "both"}})
    assert r.status_code == 200, r.text
    await stack.applied(aid, r.json()["version"])
    assert error_of(await stack.post(aid, **standard(old, msg_id="b1")), 401) \
        == "missing_api_key"
    assert error_of(await stack.post(aid, **{"X-API-Key": key}), 401) == "missing_signature"
    ok = await stack.post(aid, **{"X-API-Key": key, **standard(old, msg_id="b2")})
    assert ok.status_code == 202, ok.text

    # Rotation: the new secret works at once, the old one through its grace period.
    r = await stack.admin.post(f"/v1/automations/{aid}/signing-secrets")
    new, version = r.json()["signing_secret"], r.json()["version"]
    assert new != old and r.json()["previous_secrets_expire_at"] is not None
    await stack.applied(aid, version)
    for secret, msg in ((new, "b3"), (old, "b4")):
        r = await stack.post(aid, **{"X-API-Key": key, **standard(secret, msg_id=msg)})
        assert r.status_code == 202, r.text

    # The test endpoint checks the signature too, and publishes nothing.
    r = await stack.post(aid, test=True, **{"X-API-Key": key, **standard(new, msg_id="t1")})
    assert r.status_code == 200 and r.json()["dry_run"]["summary"]["accepted"] == 1, r.text
    assert error_of(await stack.post(aid, test=True, **{"X-API-Key": key}), 401) \
        == "missing_signature"
    records = await read_raw(stack.settings.kafka_bootstrap,
                             Topics(stack.settings.topic_prefix).raw, at_least=3)
    assert len(records) == 3  # b2, b3, b4: nothing of the refused requests or the test


async def test_signature_only_says_disabled_only_to_a_signed_sender(stack: Stack) -> None:
    created = await stack.automation(authentication={"mode": "signature"}, enabled=False)
    aid, secret = created["id"], created["signing_secret"]
    assert error_of(await stack.post(aid), 401) == "missing_signature"
    assert error_of(await stack.post(aid, **standard(generate())), 401) \
        == "invalid_signature"
    assert error_of(await stack.post(aid, **standard(secret)), 409) == "automation_disabled"


async def test_github_and_stripe_senders(stack: Stack) -> None:
    github_secret = "a-secret-typed-into-github-settings"
    created = await stack.automation(authentication={
        "mode": "signature", "signature_scheme": "github", "signing_secret": github_secret})
    assert created["signing_secret"] is None  # given, so not shown back
    aid = created["id"]
    sig = "sha256=" + hmac.new(github_secret.encode(), BODY, hashlib.sha256).hexdigest()
    delivery = {"X-Hub-Signature-256": sig, "X-GitHub-Delivery": "72d3162e-cc78-11e3"}
    first = await stack.post(aid, **delivery)
    redelivered = await stack.post(aid, **delivery)
    assert first.status_code == 202 and redelivered.content == first.content

    # The same automation moved to Stripe: the secret is Stripe's, given at rotation.
    stripe_secret = "whsec_" + "Stripe1" * 5
    r = await stack.admin.patch(f"/v1/automations/{aid}", json={
        "authentication": {"mode": "signature", "signature_scheme": "stripe"}})
    assert r.status_code == 200, r.text
    r = await stack.admin.post(f"/v1/automations/{aid}/signing-secrets",
                               json={"secret": stripe_secret})
    assert r.status_code == 200 and r.json()["signing_secret"] == stripe_secret
    await stack.applied(aid, r.json()["version"])
    t = int(time.time())
    v1 = hmac.new(stripe_secret.encode(), f"{t}.".encode() + BODY, hashlib.sha256).hexdigest()
    r = await stack.post(aid, **{"Stripe-Signature": f"t={t},v1={v1}"})
    assert r.status_code == 202, r.text
    bad = await stack.admin.post(f"/v1/automations/{aid}/signing-secrets",
                                 json={"secret": "short"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "secret"
    records = await read_raw(stack.settings.kafka_bootstrap,
                             Topics(stack.settings.topic_prefix).raw, at_least=2)
    assert len(records) == 2
