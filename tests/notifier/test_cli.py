"""`hookstream smtp-sink` and `hookstream notifier` as the processes `make run` starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from hookstream.local.kafka import free_port
from hookstream.local.smtp_sink import read_eml
from notifier.mailer import SmtpPool
from notifier.render import plain_mail
from notifier.smtp_config import SmtpConfig

from .conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "hookstream.cli", *args], cwd=ROOT, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes], sig: int) -> int:
    os.kill(proc.pid, sig)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise AssertionError("did not stop on the signal") from None


async def test_smtp_sink_command_writes_eml_files(tmp_path: Path) -> None:
    port = free_port()
    proc = _spawn(["smtp-sink", "--dir", str(tmp_path / "mail"), "--port", str(port)],
                  dict(os.environ), tmp_path / "sink.log")
    try:
        pool = SmtpPool(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}"), 1)
        for _ in range(100):
            try:
                await pool.send(plain_mail(subject="hello sink", text="body", mail_from="a@b.org",
                                           to=["c@d.org"]), "a@b.org", ["c@d.org"])
                break
            except Exception:  # noqa: BLE001 - not listening yet: try again
                await _sleep(0.1)
        await pool.close()
        [eml] = await wait_for(lambda: list((tmp_path / "mail").glob("*.eml")))
        assert read_eml(eml)["Subject"] == "hello sink"
    finally:
        assert _stop(proc, signal.SIGINT) == 0


@pytest.mark.kafka
async def test_notifier_command_serves_health_and_stops_cleanly(
        settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, "HOOKSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "HOOKSTREAM_TOPIC_PREFIX": settings.topic_prefix,
           "HOOKSTREAM_DATABASE_URL": settings.database_url,
           "HOOKSTREAM_SMTP_URL": "smtp://user:topsecret@127.0.0.1:25",
           "HOOKSTREAM_NOTIFIER_PORT": str(settings.notifier_port)}
    log = tmp_path / "notifier.log"
    proc = _spawn(["notifier"], env, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.notifier_port}",
                                     timeout=2) as client:
            for _ in range(300):
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    r = await client.get("/healthz")
                    if r.status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                await _sleep(0.1)
            assert r.status_code == 200, r.text
            assert r.json()["checks"] == {"config_loaded": True, "invitations_consumer": True,
                                          "alerts_consumer": True}
            assert "hookstream_invitations_sent_total" in (await client.get("/metrics")).text
    finally:
        assert _stop(proc, signal.SIGTERM) == 0
    text = log.read_text()
    assert "topsecret" not in text and "smtp://user:***@127.0.0.1:25" in text


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
