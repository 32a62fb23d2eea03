"""Issue 16's invitation rules on the whole real pipeline: admin API and ingress (uvicorn, in
process), the streams worker (`hookstream worker`, a subprocess), the notifier, a real aiosmtpd
server.

- Throttling: two webhooks for one address in the same second give one mail and one
  `throttled` outcome; a third within the N days is throttled too; after the N days (a day
  shortened to a few seconds) the address is invited again. The admin API lists the throttled
  invitations and counts them.
- Send window: an invitation due at 23:00 with a 09:00-17:00 window in Europe/Amsterdam waits
  in the scheduler and is mailed at 09:00, never before, on the scaled clock of a short
  HOOKSTREAM_DAY_SECONDS (about 48 s a day: an hour is 2 s; see automations/send_window.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from automations.send_window import scaled_datetime
from control_plane.api import create_app
from core.settings import Settings
from hookstream.local.kafka import free_port
from hookstream.local.smtp_sink import SmtpSink
from ingress.app import create_app as create_ingress
from notifier.app import Notifier
from notifier.metrics import INVITATION_OUTCOMES

from .conftest import ADMIN_TOKEN, FAST, Bus, wait_for
from .test_auto_disable import served
from .test_pipeline import _post_when_ready

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
AMSTERDAM = ZoneInfo("Europe/Amsterdam")


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path
                 ) -> Iterator[Callable[[float], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "worker.log").open("wb")

    def start(day_seconds: float) -> subprocess.Popen[bytes]:
        env = {**os.environ, "HOOKSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
               "HOOKSTREAM_TOPIC_PREFIX": settings.topic_prefix,
               "HOOKSTREAM_TOPIC_PARTITIONS": str(settings.topic_partitions),
               "HOOKSTREAM_DAY_SECONDS": str(day_seconds),
               "HOOKSTREAM_WORKER_PORT": str(free_port()),
               "HOOKSTREAM_VAR_DIR": str(tmp_path / "var")}
        proc = subprocess.Popen([sys.executable, "-m", "hookstream.cli", "worker",
                                 "--loglevel", "warn"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:  # stopped by its pid
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


async def _automation(admin: httpx.AsyncClient, **rules: Any) -> dict[str, Any]:
    r = await admin.post("/v1/surveys", json={"name": "Customer satisfaction"})
    survey = r.json()
    r = await admin.post(f"/v1/surveys/{survey['id']}/variables",
                         json={"name": "name", "type": "text"})
    assert r.status_code == 201, r.text
    r = await admin.post("/v1/messages", json={
        "name": "Invite", "subject": "Your opinion, {{ name }}",
        "body": "Dear {{ name }},\n\nPlease answer: {{ survey_link }}\n"})
    r = await admin.post("/v1/automations", json={
        "name": "Webshop orders", "survey_id": survey["id"], "message_id": r.json()["id"],
        "email_field": "email", "fields": {"mode": "exclude", "paths": []},
        "mapping": [{"field": "name", "variable": "name"}], "delay_days": 0, "enabled": True,
        **rules})
    assert r.status_code == 201, r.text
    return r.json()


def _day_reaching(minute: int, at: float, zone: ZoneInfo, near: float = 48.0) -> float:
    """A HOOKSTREAM_DAY_SECONDS within a millionth of `near` whose scaled clock reads `minute`
    (minutes after local midnight in `zone`) at real instant `at`: the scaled clock counts from
    1970, so a tiny change of the day's length moves its phase by hours."""
    day = near
    for _ in range(3):  # a second pass only when a DST change lies between
        now = scaled_datetime(int(at * 1000), day, zone)
        ahead = (minute - (now.hour * 60 + now.minute + now.second / 60)) % 1440
        scaled_s = at * 86_400 / day + ahead * 60
        day = at * 86_400 / scaled_s
    return day


def _accepted_at(smtp: SmtpSink) -> list[float]:
    """When the SMTP server accepted each mail (the sink names files by the nanosecond)."""
    return [int(p.name.split("-")[0]) / 1e9 for p in smtp.files()]


async def test_a_second_webhook_within_n_days_is_throttled_and_not_mailed(
        settings: Settings, smtp: SmtpSink, bus: Bus,
        start_worker: Callable[[float], subprocess.Popen[bytes]], tmp_path: Path) -> None:
    day = 6.0  # throttle_days=1 is six seconds here (the notifier's HOOKSTREAM_DAY_SECONDS)
    worker = start_worker(86_400.0)
    ingress_port = free_port()
    settings = settings.model_copy(update={"ingress_port": ingress_port, "day_seconds": day})
    throttled_before = INVITATION_OUTCOMES.labels(status="throttled")._value.get()
    async with served(create_app(settings), settings.admin_port), \
            httpx.AsyncClient(base_url=settings.admin_url, timeout=30,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        a = await _automation(admin, throttle_days=1)
        aid = a["id"]
        async with served(create_ingress(settings), ingress_port), \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ingress_port}", timeout=10,
                                  headers={"X-API-Key": a["api_key"]}) as ingress, \
                Notifier(settings, tuning=FAST, group_id="notifier-throttle",
                         migrate_db=False, http=False) as notifier:
            await notifier.wait_running()
            r = await _post_when_ready(ingress, aid, {"email": "warm@example.com"}, worker,
                                       tmp_path)
            assert r.status_code == 202, r.text
            await bus.outcomes(1, timeout=60)

            # Two webhooks for one address in the same second.
            first, second = await asyncio.gather(*(
                ingress.post(f"/v1/hooks/{aid}", json={"email": "ann@example.com",
                                                       "name": name})
                for name in ("Ann", "Annie")))
            assert (first.status_code, second.status_code) == (202, 202)
            outs = await bus.outcomes(3, timeout=60)
            invited = time.time()
            assert sorted(o["status"] for o in outs[1:]) == ["sent", "throttled"]
            # Again within the day, the address in capitals: throttled.
            r = await ingress.post(f"/v1/hooks/{aid}", json={"email": "ANN@example.com"})
            assert r.status_code == 202
            outs = await bus.outcomes(4, timeout=60)
            assert outs[-1]["status"] == "throttled"
            assert time.time() - invited < day, "too slow to be within the day: inconclusive"
            await asyncio.sleep(0.5)
            assert sorted(str(m["To"]) for m in smtp.messages()) == [
                "ann@example.com", "warm@example.com"]

            # After the day: invited again.
            await asyncio.sleep(max(0.0, invited + day + 0.5 - time.time()))
            r = await ingress.post(f"/v1/hooks/{aid}", json={"email": "ann@example.com"})
            outs = await bus.outcomes(5, timeout=60)
            assert outs[-1]["status"] == "sent"
            await wait_for(lambda: len(smtp.messages()) == 3, what="the third mail")

        # Visible in the admin API: the throttled invitations, and their count.
        r = await admin.get("/v1/invitations", params={"automation_id": aid,
                                                       "status": "throttled"})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert len(items) == 2 and {i["email"] for i in items} == {"ann@example.com"}
        assert all("within the automation's 1 day(s)" in i["reason"] for i in items)
        counts = (await admin.get(f"/v1/automations/{aid}/outcomes")).json()
        assert (counts["throttled"], counts["mailed"]) == (2, 3)
    assert INVITATION_OUTCOMES.labels(status="throttled")._value.get() == throttled_before + 2


async def test_due_at_23_00_with_a_9_to_5_window_is_mailed_at_9_00_and_never_before(
        settings: Settings, smtp: SmtpSink, bus: Bus,
        start_worker: Callable[[float], subprocess.Popen[bytes]], tmp_path: Path) -> None:
    # The worker's day: ~48 s (one scaled hour is two real seconds), its phase chosen so that
    # 22:56 comes ~15 s from now, once the stack is ready (~5-10 s), not up to a day later.
    day = _day_reaching(22 * 60 + 56, time.time() + 15, AMSTERDAM)
    worker = start_worker(day)
    ingress_port = free_port()
    settings = settings.model_copy(update={"ingress_port": ingress_port})
    window = {"start": "09:00", "end": "17:00", "time_zone": "Europe/Amsterdam"}

    def clock(t: float) -> datetime:
        return scaled_datetime(int(t * 1000), day, AMSTERDAM)

    async with served(create_app(settings), settings.admin_port), \
            httpx.AsyncClient(base_url=settings.admin_url, timeout=30,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        a = await _automation(admin, send_window=window)
        aid = a["id"]
        async with served(create_ingress(settings), ingress_port), \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ingress_port}", timeout=10,
                                  headers={"X-API-Key": a["api_key"]}) as ingress, \
                Notifier(settings, tuning=FAST, group_id="notifier-window",
                         migrate_db=False, http=False) as notifier:
            await notifier.wait_running()
            # Ready: the ingress answers and the worker runs (a record inside the window or
            # not, its mail is not the one under test).
            r = await _post_when_ready(ingress, aid, {"email": "warm@example.com"}, worker,
                                       tmp_path)
            assert r.status_code == 202, r.text
            # Wait for 22:56 on the window's clock (at most a scaled day: 48 s).
            while not (22 * 60 + 56 <= (now := clock(time.time())).hour * 60 + now.minute
                       < 22 * 60 + 59):
                await asyncio.sleep(0.02)
            r = await ingress.post(f"/v1/hooks/{aid}", json={"email": "late@example.com",
                                                             "name": "Late"})
            assert r.status_code == 202, r.text

            def ours(xs: list[dict]) -> list[dict]:
                return [x for x in xs if x["email"] == "late@example.com"]
            [held] = ours(await bus.read(bus.topics.scheduled, "InvitationRequested",
                                         lambda xs: bool(ours(xs)), timeout=30))
            received = clock(held["received_at"].timestamp())
            assert (received.hour, received.minute // 10) == (22, 5), received  # ~23:00
            due = clock(held["due_at"].timestamp())
            assert (due.date() - received.date()).days == 1
            # 09:00 to the clock's resolution: one real millisecond is 1.8 scaled seconds.
            assert (due.hour, due.minute) == (9, 0) and due.second < 2, due
            # While it waits, the admin API lists it with its due time. The list reads the
            # scheduler's changelog, which the scheduler writes after it took the record from
            # `invitations.scheduled`: poll (well inside the ~20 s the invitation waits).
            async def waiting() -> list[str]:
                r = await admin.get(f"/v1/automations/{aid}/invitations/waiting",
                                    params={"email": "late@example.com"})
                return [w["invitation_id"] for w in r.json()["items"]]
            async with asyncio.timeout(15):
                while (listed := await waiting()) != [held["invitation_id"]]:
                    await asyncio.sleep(0.25)
            assert listed == [held["invitation_id"]]

            mails = await wait_for(lambda: [m for m in smtp.messages()
                                            if str(m["To"]) == "late@example.com"],
                                   timeout=60, what="the 09:00 mail")
            assert len(mails) == 1
            late = [t for t, m in zip(_accepted_at(smtp), smtp.messages(), strict=True)
                    if str(m["To"]) == "late@example.com"]
            [accepted] = late
            assert accepted >= held["due_at"].timestamp(), "mailed before the window opened"
            at = clock(accepted)
            assert at.date() == due.date() and at.hour == 9, f"mailed at {at}, not at 09:00"
            # Ten scaled hours from 23:00 to 09:00: twenty real seconds, not less.
            assert accepted - held["received_at"].timestamp() >= 19.0
