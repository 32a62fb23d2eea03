"""The admin API's tokens (issue 15, item 5): the notifier's own token may only disable and
enable automations; and neither the admin API nor the ingress starts on a public address with
a development token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from control_plane.api import create_app
from core.settings import Settings, default_token_refusal, is_loopback
from notifier.admin_client import AdminClient

from .builders import make_automation
from .conftest import ADMIN_TOKEN, admin_settings

NOTIFIER_TOKEN = "test-notifier-token"


@pytest.fixture
async def app_settings(sqlite_url: str, kafka_bootstrap: str,
                       topic_prefix: str) -> AsyncIterator[tuple[Settings, httpx.ASGITransport]]:
    settings = admin_settings(sqlite_url, kafka_bootstrap, topic_prefix,
                              notifier_admin_token=SecretStr(NOTIFIER_TOKEN))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield settings, httpx.ASGITransport(app=app)


def _client(transport: httpx.ASGITransport, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, base_url="http://admin",
                             headers={"Authorization": f"Bearer {token}"})


@pytest.mark.kafka
async def test_the_notifier_token_disables_and_enables_and_nothing_else(
        app_settings: tuple[Settings, httpx.ASGITransport]) -> None:
    _, transport = app_settings
    async with _client(transport, ADMIN_TOKEN) as admin, \
            _client(transport, NOTIFIER_TOKEN) as notifier:
        automation = await make_automation(admin, enabled=True)
        aid = automation["id"]

        r = await notifier.post(f"/v1/automations/{aid}/disable", json={"reason": "failing"})
        assert r.status_code == 200, r.text
        assert r.json()["enabled"] is False
        r = await notifier.post(f"/v1/automations/{aid}/enable")
        assert r.status_code == 200, r.text
        assert r.json()["enabled"] is True

        # Everything else: 403 (known token, not allowed), never the data.
        for method, path, body in [
                ("GET", "/v1/automations", None),
                ("GET", f"/v1/automations/{aid}", None),
                ("POST", f"/v1/automations/{aid}/keys", None),
                ("DELETE", f"/v1/automations/{aid}", None),
                ("POST", "/v1/surveys", {"name": "x"}),
                ("GET", "/v1/surveys", None)]:
            r = await notifier.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert r.json()["error"] == "forbidden"
        # The automation is untouched by the refused calls.
        r = await admin.get(f"/v1/automations/{aid}")
        assert r.status_code == 200 and r.json()["enabled"] is True

        # A wrong token is still 401, on the notifier's routes too.
        async with _client(transport, "not-a-token") as stranger:
            r = await stranger.post(f"/v1/automations/{aid}/disable")
            assert r.status_code == 401


@pytest.mark.kafka
async def test_admin_client_uses_its_scoped_token(
        app_settings: tuple[Settings, httpx.ASGITransport]) -> None:
    """notifier/admin_client.py against the real admin app with the notifier's token."""
    _, transport = app_settings
    async with _client(transport, ADMIN_TOKEN) as admin:
        aid = (await make_automation(admin, enabled=True))["id"]
        client = AdminClient("http://admin", NOTIFIER_TOKEN, transport=transport)
        try:
            result = await client.disable(aid, "ten failures in a row")
            assert result.ok, result.detail
            gone = await client.disable("00000000-0000-0000-0000-000000000000", "x")
            assert not gone.ok and gone.gone
        finally:
            await client.close()
        r = await admin.get(f"/v1/automations/{aid}")
        assert r.json()["enabled"] is False
        assert r.json()["disabled_reason"] == "ten failures in a row"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
    ("admin.example.com", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_default_token_refusal() -> None:
    # The development defaults, whatever this machine's environment says.
    dev = Settings(admin_token=Settings.model_fields["admin_token"].default,
                   notifier_admin_token=Settings.model_fields["notifier_admin_token"].default)
    assert default_token_refusal(dev, "127.0.0.1", "admin API",
                                 ("admin_token", "notifier_admin_token")) is None
    refusal = default_token_refusal(dev, "0.0.0.0", "admin API")
    assert refusal is not None and "HOOKSTREAM_ADMIN_TOKEN" in refusal and "0.0.0.0" in refusal
    assert "\n" not in refusal
    # The admin token set, the notifier's left at its default: still refused on the admin.
    half = dev.model_copy(update={"admin_token": SecretStr("a-long-random-string")})
    assert default_token_refusal(half, "0.0.0.0", "ingress") is None
    refusal = default_token_refusal(half, "0.0.0.0", "admin API",
                                    ("admin_token", "notifier_admin_token"))
    assert refusal is not None and "HOOKSTREAM_NOTIFIER_ADMIN_TOKEN" in refusal
    both = Settings(admin_token=SecretStr("a-long-random-string"),
                    notifier_admin_token=SecretStr("another-long-random-string"))
    assert default_token_refusal(both, "0.0.0.0", "admin API",
                                 ("admin_token", "notifier_admin_token")) is None


@pytest.mark.parametrize("command", [["admin", "--host", "0.0.0.0"], ["ingress"]])
def test_cli_refuses_a_public_address_with_the_default_token(command: list[str],
                                                             tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSTREAM_")}
    env.update(HOOKSTREAM_INGRESS_HOST="0.0.0.0", HOOKSTREAM_DATABASE_URL=f"sqlite:///"
               f"{tmp_path}/x.db", HOOKSTREAM_KAFKA_BOOTSTRAP="127.0.0.1:1")
    r = subprocess.run([sys.executable, "-m", "hookstream.cli", *command], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: refusing to serve the ") and \
        "HOOKSTREAM_ADMIN_TOKEN" in lines[0], r.stderr
    assert not list(tmp_path.iterdir())  # refused before anything was created
