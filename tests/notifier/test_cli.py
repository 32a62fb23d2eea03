"""`hookstream smtp-sink`, `hookstream notifier` and `hookstream survey-page` as the
processes `make run` starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from hookstream.local.kafka import free_port
from hookstream.local.smtp_sink import SmtpSink, read_eml
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
async def test_notifier_command_is_alive_but_not_ready_until_smtp_answers(
        settings: Settings, tmp_path: Path) -> None:
    """No SMTP server yet: /healthz 200 (nothing to restart), /readyz 503 naming `smtp`
    while the consumers run; the server comes: /readyz 200. The password never shows."""
    smtp_port = free_port()
    env = {**os.environ, "HOOKSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "HOOKSTREAM_TOPIC_PREFIX": settings.topic_prefix,
           "HOOKSTREAM_DATABASE_URL": settings.database_url,
           "HOOKSTREAM_SMTP_URL": f"smtp://user:topsecret@127.0.0.1:{smtp_port}?timeout=2",
           "HOOKSTREAM_NOTIFIER_PORT": str(settings.notifier_port)}
    log = tmp_path / "notifier.log"
    proc = _spawn(["notifier"], env, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.notifier_port}",
                                     timeout=5) as client:
            async def probes() -> tuple[int, httpx.Response] | None:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    return (await client.get("/healthz")).status_code, \
                        await client.get("/readyz")
                except httpx.TransportError:
                    return None  # not listening yet

            async def consuming() -> tuple[int, httpx.Response] | None:
                got = await probes()
                checks = got[1].json()["checks"] if got is not None else {}
                if not (checks.get("invitations_consumer") and checks.get("alerts_consumer")):
                    return None  # both groups join on their own; under load one comes later
                return got

            live, ready = await _poll(consuming, what="the notifier's consumers")
            assert live == 200
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"] == {
                "kafka": True, "topics": True, "config_loaded": True, "invitations_consumer": True,
                "alerts_consumer": True, "database": True, "smtp": False}
            with SmtpSink(tmp_path / "mail", port=smtp_port, auth=("user", "topsecret")):
                async def ready_now() -> tuple[int, httpx.Response] | None:
                    got = await probes()
                    return got if got is not None and got[1].status_code == 200 else None

                live, ready = await _poll(ready_now, what="/readyz 200")
                assert live == 200
                assert all(ready.json()["checks"].values()), ready.text
                assert "hookstream_invitations_sent_total" in \
                    (await client.get("/metrics")).text
    finally:
        assert _stop(proc, signal.SIGTERM) == 0
    text = log.read_text()
    assert "topsecret" not in text and f"smtp://user:***@127.0.0.1:{smtp_port}" in text


async def test_survey_page_command_serves_the_page_and_its_probes(
        db_url: str, tmp_path: Path) -> None:
    """`hookstream survey-page` on its own port: probes, metrics, and the page's 404 for a
    link no invitation carries (the page itself: test_invitations.py)."""
    port = free_port()
    env = {**os.environ, "HOOKSTREAM_DATABASE_URL": db_url,
           "HOOKSTREAM_SURVEY_PORT": str(port),
           "HOOKSTREAM_SURVEY_BASE_URL": f"http://127.0.0.1:{port}/s"}
    log = tmp_path / "survey.log"
    proc = _spawn(["survey-page"], env, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            async def ready() -> httpx.Response | None:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    r = await client.get("/readyz")
                except httpx.TransportError:
                    return None  # not listening yet
                return r if r.status_code == 200 else None

            r = await _poll(ready, what="the survey page's /readyz")
            assert r.json()["checks"] == {"database": True}
            assert (await client.get("/healthz")).status_code == 200
            page = await client.get("/s/" + "x" * 32)
            assert page.status_code == 404 and "not valid" in page.text
            assert page.headers["content-type"].startswith("text/html")
            assert 'hookstream_survey_pages_total{status="404"} 1.0' in \
                (await client.get("/metrics")).text
            assert (await client.get("/v1/automations")).status_code == 404  # no admin API
    finally:
        # uvicorn shuts down gracefully, then dies of the SIGTERM it was sent (its convention).
        assert _stop(proc, signal.SIGTERM) in (0, -signal.SIGTERM)
    text = log.read_text()
    assert "Finished server process" in text
    assert "x" * 32 not in text  # no access log: tokens stay out of logs


async def _poll(probe: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await probe()
        if got is not None:
            return got
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
