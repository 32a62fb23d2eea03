"""`hookstream admin` serves the API as a real process; the operator commands and the demo
seeding work against it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from control_plane.demo import seed_demo
from core.settings import get_settings
from hookstream.cli import app
from hookstream.local.kafka import free_port
from tests.control_plane.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.kafka


@pytest.fixture
def admin_url(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    env = {"HOOKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap, "HOOKSTREAM_TOPIC_PREFIX": topic_prefix,
           "HOOKSTREAM_TOPIC_PARTITIONS": "1", "HOOKSTREAM_ADMIN_TOKEN": ADMIN_TOKEN,
           "HOOKSTREAM_DATABASE_URL": f"sqlite:///{tmp_path}/var/hookstream.db",
           "HOOKSTREAM_ADMIN_URL": f"http://127.0.0.1:{port}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    log = (tmp_path / "admin.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "hookstream.cli", "admin", "--port", str(port),
                             "--log-level", "warning"], env={**os.environ, **env},
                            stdout=log, stderr=subprocess.STDOUT)
    url = env["HOOKSTREAM_ADMIN_URL"]
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "admin.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "admin API not ready within 60 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        get_settings.cache_clear()


def test_cli_against_running_admin(admin_url: str, tmp_path: Path) -> None:
    automation_id, key = seed_demo(admin_url, ADMIN_TOKEN)
    assert len(key) >= 40
    runner = CliRunner()

    r = runner.invoke(app, ["automations", "list"])
    assert r.exit_code == 0, r.output
    assert automation_id in r.output and "enabled" in r.output

    r = runner.invoke(app, ["automations", "show", automation_id, "--json"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert shown["delay_days"] == 0 and shown["enabled"] is True and key not in r.output

    r = runner.invoke(app, ["automations", "disable", automation_id, "--reason", "maintenance"])
    assert r.exit_code == 0 and "disabled" in r.output
    r = runner.invoke(app, ["automations", "enable", automation_id])
    assert r.exit_code == 0 and "enabled" in r.output
    r = runner.invoke(app, ["automations", "rotate-key", automation_id])
    assert r.exit_code == 0 and "new API key:" in r.output

    body = {**shown, "name": "From a file"}
    for k in ("id", "api_keys", "version", "webhook_path", "created_at", "updated_at",
              "disabled_reason", "enabled"):
        body.pop(k)
    spec = tmp_path / "automation.json"
    spec.write_text(json.dumps(body))
    r = runner.invoke(app, ["automations", "create", "--file", str(spec), "--disabled",
                            "--delay-days", "3"])
    assert r.exit_code == 0, r.output
    created = json.loads(r.output)
    assert (created["name"], created["enabled"], created["delay_days"]) == (
        "From a file", False, 3)
    assert created["api_key"]

    r = runner.invoke(app, ["automations", "create", "--name", "bad", "--survey-id",
                            shown["survey_id"], "--message-id", shown["message_id"],
                            "--email-field", "email", "--map", "city=nope"])
    assert r.exit_code == 1
    assert "mapping[0].variable" in r.output

    r = runner.invoke(app, ["automations", "show", "no-such-id"])
    assert r.exit_code == 1 and "not_found" in r.output
