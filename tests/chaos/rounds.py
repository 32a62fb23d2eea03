"""One round of the fault-injection suite: a steady load, one fault, the drain, the counts.

The load is what a well-behaved integrator sends: RATE new respondents a second (open loop),
each request with an Idempotency-Key of its own, retried with the same key on 503, 429 and
connection errors (backoff 0.2 s doubling to 2 s, for up to GIVE_UP_S). One connection per
request, so the balancer spreads requests over the replicas as it spreads connections.

Counted per round (only this round's respondents, `<round>-<n>@example.com`):
- accepted: respondents answered 202 (on some attempt);
- mailed_distinct: accepted respondents with a mail at the SMTP server;
- lost: accepted and never mailed (the suite fails on any);
- duplicates: mails beyond the first per respondent, split into
  in_window: a copy with the same Message-ID (the same invitation sent again: a notifier
  died after the server accepted the mail and before it recorded it; the runbook's window),
  cross_replica: a copy with another Message-ID for a respondent the client sent more than
  once (a retry that reached the other ingress replica, whose Idempotency-Key store did not
  know the key), and the rest, which fail the round;
- max_delay_s: first attempt to the mail's arrival (the SMTP server names each file by the
  nanosecond it arrived), the largest over accepted respondents;
- client_errors: failed attempts (503s, connection errors, timeouts) the clients retried;
  gave_up: respondents whose every attempt failed for GIVE_UP_S;
- first_ok_s: from the fault to the first 202 to a request sent after it;
- p50_delay_s: the median of those delays;
- recovered_s: from the fault to the arrival of the last mail that took longer than the
  threshold (twice the median delay of the requests mailed before the fault, at least 5 s):
  when the backlog the fault made was gone; 0 when no mail was late;
- mail_gap_s: the longest time between two mails of the round (the load never pauses, so a
  long gap is the time nothing was mailed at all);
- drained_s: from the end of the load to the last mail.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path

import aiohttp
import orjson
import sqlalchemy as sa

from tests.chaos.fleet import SHARED_IDEMPOTENCY, Fleet

GIVE_UP_S = 120.0
ATTEMPT_TIMEOUT_S = 20.0  # longer than the ingress's wait for Kafka's acknowledgement (12 s)
RETRYABLE = {429, 502, 503, 504}


@dataclass
class Sent:
    first: float  # wall clock of the first attempt
    attempts: int = 0
    accepted_at: float | None = None


@dataclass
class Mail:
    to: str
    message_id: str
    at: float  # wall clock the SMTP server received it


class MailIndex:
    """The SMTP server's .eml files, read once each (headers only)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.mails: dict[str, Mail] = {}
        self._parser = BytesParser(policy=policy.default)

    def scan(self) -> list[Mail]:
        if self.folder.exists():
            for eml in self.folder.glob("*.eml"):
                if eml.name in self.mails:
                    continue
                with eml.open("rb") as fh:
                    msg = self._parser.parse(fh, headersonly=True)
                ns = int(eml.name.split("-", 1)[0])
                self.mails[eml.name] = Mail(str(msg["To"]), str(msg["Message-ID"]), ns / 1e9)
        return list(self.mails.values())

    def of_round(self, tag: str) -> dict[str, list[Mail]]:
        by_to: dict[str, list[Mail]] = {}
        for m in self.scan():
            if m.to.startswith(f"{tag}-"):
                by_to.setdefault(m.to, []).append(m)
        return by_to


@dataclass
class Fault:
    name: str
    inject: Callable[[Fleet, Callable[[str], None]], None]  # runs on a thread of its own


@dataclass
class Result:
    fault: str
    accepted: int
    mailed_distinct: int
    lost: int
    duplicates: int
    in_window: int
    cross_replica: int
    unexplained: int
    max_delay_s: float
    p50_delay_s: float
    client_errors: int
    gave_up: int
    first_ok_s: float | None
    recovered_s: float
    drained_s: float
    mail_gap_s: float
    sent: int
    errors: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    lost_sample: list[str] = field(default_factory=list)

    def line(self) -> str:
        first_ok = "n/a" if self.first_ok_s is None else f"{self.first_ok_s:.1f}"
        return (f"fault={self.fault} accepted={self.accepted} "
                f"mailed_distinct={self.mailed_distinct} lost={self.lost} "
                f"duplicates={self.duplicates} max_delay_s={self.max_delay_s:.1f} "
                f"p50_delay_s={self.p50_delay_s:.1f} "
                f"client_errors={self.client_errors} in_window={self.in_window} "
                f"cross_replica={self.cross_replica} unexplained={self.unexplained} "
                f"gave_up={self.gave_up} first_ok_s={first_ok} "
                f"recovered_s={self.recovered_s:.1f} drained_s={self.drained_s:.1f} "
                f"mail_gap_s={self.mail_gap_s:.1f} sent={self.sent}")


class FaultThread(threading.Thread):
    """Runs a fault at `at` seconds after `t0`, off the load's event loop."""

    def __init__(self, fleet: Fleet, fault: Fault, t0: float, at: float) -> None:
        super().__init__(daemon=True)
        self.fleet, self.fault, self.t0, self.at = fleet, fault, t0, at
        self.events: list[str] = []
        self.fault_wall: float | None = None
        self.error: BaseException | None = None

    def say(self, what: str) -> None:
        self.events.append(f"{time.monotonic() - self.t0:.1f}s {what}")

    def run(self) -> None:
        try:
            time.sleep(max(0.0, self.t0 + self.at - time.monotonic()))
            self.fault_wall = time.time()
            self.fault.inject(self.fleet, self.say)
        except BaseException as exc:  # noqa: BLE001 - handed to the round, which re-raises it
            self.error = exc


async def _load(url: str, api_key: str, tag: str, rate: float, seconds: float,
                sent: dict[str, Sent], errors: Counter[str]) -> None:
    connector = aiohttp.TCPConnector(limit=2000, force_close=True)
    timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one(i: int) -> None:
            address = f"{tag}-{i}@example.com"
            body = orjson.dumps({"email": address, "first_name": f"R{i}"})
            headers = {"X-API-Key": api_key, "Content-Type": "application/json",
                       "Idempotency-Key": uuid.uuid4().hex}
            s = sent[address] = Sent(time.time())
            backoff = 0.2
            give_up = time.monotonic() + GIVE_UP_S
            while True:
                s.attempts += 1
                try:
                    async with session.post(url, data=body, headers=headers) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                    status = None
                if status == 202:
                    s.accepted_at = time.time()
                    return
                if status is not None:
                    errors[str(status)] += 1
                    if status not in RETRYABLE:
                        return  # a refusal a retry would not change: counted, not retried
                if time.monotonic() > give_up:
                    errors["gave_up"] += 1
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

        t0 = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        while (elapsed := time.monotonic() - t0) < seconds:
            while len(tasks) < int(elapsed * rate):
                tasks.append(asyncio.create_task(one(len(tasks))))
            await asyncio.sleep(0.01)
        # A stalled client loop (two shared cores) still sends the round's full count.
        while len(tasks) < int(seconds * rate):
            tasks.append(asyncio.create_task(one(len(tasks))))
        await asyncio.gather(*tasks)


def _sending_rows(fleet: Fleet) -> int:
    """Invitations a notifier has claimed and not finished (-1 while PostgreSQL is away)."""
    assert fleet.pg is not None
    try:
        engine = sa.create_engine(fleet.pg.url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM invitations WHERE status = 'sending'")).scalar_one())
    except sa.exc.OperationalError:
        return -1


def run_round(fleet: Fleet, fault: Fault, tag: str, rate: float, seconds: float,
              fault_at: float, drain_timeout: float = 300.0) -> Result:
    sent: dict[str, Sent] = {}
    errors: Counter[str] = Counter()
    t0 = time.monotonic()
    thread = FaultThread(fleet, fault, t0, fault_at)
    thread.start()
    asyncio.run(_load(fleet.url, fleet.api_key, tag, rate, seconds, sent, errors))
    load_end = time.time()
    thread.join(600)  # a broker or PostgreSQL back before the drain is judged
    if thread.error is not None:
        raise thread.error
    assert not thread.is_alive(), f"the fault {fault.name} did not finish: {thread.events}"
    for svc in fleet.services.values():  # every part back before the next round
        svc.wait_ready()

    accepted = {a: s for a, s in sent.items() if s.accepted_at is not None}
    index = MailIndex(fleet.mail_dir)
    deadline = time.monotonic() + drain_timeout
    quiet_since, seen = time.monotonic(), -1
    while time.monotonic() < deadline:
        mails = index.of_round(tag)
        count = sum(len(v) for v in mails.values())
        if count != seen:
            quiet_since, seen = time.monotonic(), count
        # Drained: every accepted respondent mailed, no invitation claimed and unfinished
        # (a dead notifier's lease ends in a resend), and no new mail for 5 s.
        if set(accepted) <= set(mails) and _sending_rows(fleet) == 0 \
                and time.monotonic() - quiet_since > 5:
            break
        time.sleep(1)
    mails = index.of_round(tag)

    lost = sorted(set(accepted) - set(mails))
    dup = in_window = cross = unexplained = 0
    for address, copies in mails.items():
        if len(copies) < 2:
            continue
        ids = Counter(m.message_id for m in copies)
        extra_same = sum(n - 1 for n in ids.values())
        extra_other = len(ids) - 1
        dup += extra_same + extra_other
        in_window += extra_same
        if not SHARED_IDEMPOTENCY and sent.get(address, Sent(0)).attempts > 1:
            cross += extra_other
        else:
            unexplained += extra_other

    first_mail = {a: min(m.at for m in copies) for a, copies in mails.items()}
    delays = {a: first_mail[a] - s.first for a, s in accepted.items() if a in first_mail}
    fault_wall = thread.fault_wall or load_end
    p50 = statistics.median(delays.values()) if delays else 0.0
    # The normal: requests mailed before the fault (those still on their way share its cost).
    before = [d for a, d in delays.items() if first_mail[a] < fault_wall]
    threshold = max(5.0, 2 * statistics.median(before)) if before else max(5.0, 2 * p50)
    arrivals = sorted(m.at for copies in mails.values() for m in copies)
    gap = max((b - a for a, b in zip(arrivals, arrivals[1:], strict=False)), default=0.0)
    late = [first_mail[a] for a, d in delays.items() if d > threshold]
    after_ok = [s.accepted_at for s in accepted.values()
                if s.first >= fault_wall and s.accepted_at is not None]
    last_mail = max((m.at for copies in mails.values() for m in copies), default=load_end)
    retried = sum(n for k, n in errors.items() if k != "gave_up")
    return Result(
        fault=fault.name, accepted=len(accepted), mailed_distinct=len(set(mails) & set(accepted)),
        lost=len(lost), duplicates=dup, in_window=in_window, cross_replica=cross,
        unexplained=unexplained, max_delay_s=max(delays.values(), default=0.0), p50_delay_s=p50,
        client_errors=retried, gave_up=errors["gave_up"],
        first_ok_s=(min(after_ok) - fault_wall) if after_ok else None,
        recovered_s=max(0.0, max(late) - fault_wall) if late else 0.0,
        drained_s=max(0.0, last_mail - load_end), mail_gap_s=gap, sent=len(sent),
        errors=dict(errors),
        events=thread.events, lost_sample=lost[:20])


# -- the faults ------------------------------------------------------------------------------

RESTART_AFTER_S = 15.0  # an orchestrator brings a killed process back after this long


def _kill_and_restart(kind: str) -> Callable[[Fleet, Callable[[str], None]], None]:
    def inject(fleet: Fleet, say: Callable[[str], None]) -> None:
        svc = fleet.of(kind)[0]
        pid = svc.kill()
        say(f"SIGKILL {svc.name} (pid {pid})")
        time.sleep(RESTART_AFTER_S)
        svc.start()
        say(f"{svc.name} restarted (pid {svc.pid})")
        svc.wait_ready()
        say(f"{svc.name} ready")
    return inject


def _broker_kill(fleet: Fleet, say: Callable[[str], None]) -> None:
    node = fleet.cluster.nodes[-1].node_id
    say(f"SIGKILL broker {node} (pid {fleet.cluster.kill_node(node)})")
    time.sleep(12.0)
    say(f"restart broker {node}")
    fleet.cluster.restart_node(node, timeout=240)
    say(f"broker {node} back in the cluster")


def _broker_pause(fleet: Fleet, say: Callable[[str], None]) -> None:
    node = fleet.cluster.nodes[-1].node_id
    say(f"SIGSTOP broker {node} (pid {fleet.cluster.pause_node(node)})")
    time.sleep(10.0)
    fleet.cluster.resume_node(node)
    say(f"SIGCONT broker {node}")


def _smtp_stop(fleet: Fleet, say: Callable[[str], None]) -> None:
    svc = fleet.services["smtp"]
    svc.stop()
    say("SMTP server stopped")
    time.sleep(20.0)
    svc.start()
    say(f"SMTP server started (pid {svc.pid})")


def _postgres_restart(fleet: Fleet, say: Callable[[str], None]) -> None:
    say("PostgreSQL restart")
    fleet.restart_postgres()
    say("PostgreSQL back")


FAULTS = {
    "worker_kill": Fault("worker_kill", _kill_and_restart("worker")),
    "notifier_kill": Fault("notifier_kill", _kill_and_restart("notifier")),
    "ingress_kill": Fault("ingress_kill", _kill_and_restart("ingress")),
    "broker_kill": Fault("broker_kill", _broker_kill),
    "broker_pause": Fault("broker_pause", _broker_pause),
    "smtp_stop": Fault("smtp_stop", _smtp_stop),
    "postgres_restart": Fault("postgres_restart", _postgres_restart),
}

_TAG = re.compile(r"[^a-z0-9]")


def round_tag(fault: str) -> str:
    return _TAG.sub("", fault) + uuid.uuid4().hex[:6]


def check(result: Result) -> None:
    """What every round must show: nothing lost, no duplicate outside the documented
    windows (same Message-ID only when a notifier was killed)."""
    assert result.lost == 0, f"lost {result.lost}: {result.lost_sample}"
    assert result.unexplained == 0, result.line()
    if result.fault != "notifier_kill":
        assert result.in_window == 0, result.line()
    assert result.accepted > 0, result.line()
