"""Consume `invitations.due`, mail each invitation once, emit its `InvitationOutcome`.

Per record: the automation's snapshot decides (deleted: suppressed; disabled: held, see
below); the invitation's SQL row is claimed (its primary key makes a replay a `duplicate`; under the
automation's throttling rule, an address the survey invited within its days is `throttled`,
decided in the same SQL transaction, see `store.claim`); the message is
rendered and sent on the SMTP pool; transient failures retry with exponential backoff and
jitter inside the record's own task, so other invitations keep flowing; the outcome is
recorded in SQL, then published; only then does the record count as done, and offsets are
committed up to the lowest record still in flight.

Issue 15: an invitation that falls due while its automation is disabled is not discarded. Its
row says `held` (not final) and keeps the request; the sweep (woken by every config change
that enables or deletes an automation, and every `held_sweep_interval` for expiry) sends it
once the automation is enabled again, ends it `expired` once it is more than the hold expiry
past its due time, and `suppressed` when the automation is deleted (the only way to drop it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from sqlalchemy.exc import IntegrityError

from automations.config_cache import ConfigCache
from automations.snapshot import AutomationSnapshot
from core.kafka.clients import Kafka
from core.kafka.topics import Topics
from core.tasks import cancel_and_wait
from notifier import events, store, store_dbapi
from notifier.consuming import ConsumerService, TrackedConsumer
from notifier.mailer import SMTPUTF8_UNSUPPORTED, SendError, SmtpPool
from notifier.metrics import (
    HELD_WAITING,
    INVITATION_AGE,
    INVITATION_OUTCOMES,
    INVITATIONS_FAILED,
    INVITATIONS_SENT,
    NOTIFIER_SECONDS,
    SMTP_RETRIES,
    STAGE_CLAIM,
    STAGE_DUE_WAIT,
    STAGE_SMTP,
)
from notifier.models import SENT, SUPPRESSED
from notifier.render import (
    MessageError,
    invitation_mail,
    message_id_for,
    scrub,
    sender_address,
)
from schemas import codec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tuning:
    """Timing knobs; tests shorten them."""

    max_in_flight: int = 256
    backoff_base: float = 0.5  # seconds before the first retry
    backoff_max: float = 30.0
    give_up_after: float = 3600.0  # a 4xx that lasts this long becomes a failed outcome
    unknown_automation_wait: float = 5.0  # the config topic may lag the invitation a little
    busy_poll: float = 0.5
    # Full (max_in_flight) for longer than this: poll (paused) to stay in the group, whose
    # max.poll.interval.ms (300 s) a consumer that does not poll would exceed.
    full_wait: float = 60.0
    commit_interval: float = 0.2
    held_sweep_interval: float = 30.0  # held invitations are checked for expiry this often
    held_sweep_batch: int = 500

    def lease(self, smtp_timeout: float) -> timedelta:
        # Longer than the longest gap between two attempts, which renew it.
        return timedelta(seconds=max(60.0, 2 * (self.backoff_max + smtp_timeout)))


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: between half and all of min(cap, base * 2^(n-1))."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


class InvitationService(ConsumerService):
    def __init__(self, *, bootstrap: Kafka, topics: Topics, config: ConfigCache, pool: SmtpPool,
                 producer: AIOKafkaProducer, db: store.Db, survey_base_url: str,
                 mail_from: str, group_id: str = "hookstream-notifier",
                 tuning: Tuning | None = None, day_seconds: float = 86400.0,
                 hold_expiry: timedelta = timedelta(days=7), dbapi_claim: bool = True) -> None:
        super().__init__(TrackedConsumer(bootstrap=bootstrap, group_id=group_id,
                                         topic=topics.due,
                                         before_commit=self._flush_published))
        self.topics = topics
        self.config = config
        self.pool = pool
        self.producer = producer
        self.db = db
        self.survey_base_url = survey_base_url.rstrip("/")
        self.mail_from = mail_from
        self.sender = sender_address(mail_from)
        self.tuning = tuning or Tuning()
        self.day_seconds = day_seconds  # the length of throttling's days (issue 16)
        self.hold_expiry = hold_expiry  # issue 15: how long past due a held one may still go
        self.owner = f"notifier-{uuid.uuid4()}"
        # The hot path's claim and finish: on the driver's cursor (store_dbapi), or the
        # SQLAlchemy reference (store) when told so or for another database.
        fast = dbapi_claim and db.engine.dialect.name in store_dbapi.SUPPORTED
        self._claim = store_dbapi.claim if fast else store.claim
        self._finish = store_dbapi.finish if fast else store.finish
        self._lease = self.tuning.lease(pool.config.timeout)
        self._tasks: set[asyncio.Task[None]] = set()
        self._task_done = asyncio.Event()  # set as tasks end: room for more records
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = defaultdict(int)
        self._published: set[str] = set()  # outcome out, flag not yet written to SQL
        self._committing: asyncio.Task[None] | None = None
        self._wake_sweep = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        config.add_listener(self._config_changed)

    # --- the consumer loop ------------------------------------------------------------

    async def run(self) -> None:
        consumer = await self._in.start()
        self.running = True
        self._wake_sweep.set()  # held invitations from before this start
        self._sweeper = asyncio.create_task(self._sweep_held(), name="notifier-held-sweep")
        paused = False
        full_since: float | None = None  # loop time the notifier filled up (max_in_flight)
        loop = asyncio.get_running_loop()
        last_commit = loop.time()
        try:
            while not self._stopping.is_set():
                room = self.tuning.max_in_flight - len(self._tasks)
                if room > 0:
                    full_since = None
                elif full_since is None:
                    full_since = loop.time()
                if full_since is None:
                    if paused:
                        consumer.resume(*consumer.assignment())
                        paused = False
                    batches = await consumer.getmany(timeout_ms=100, max_records=room)
                elif loop.time() - full_since < self.tuning.full_wait:
                    # Full: wait for a task to finish, without polling. Pausing instead made
                    # aiokafka drop the records it had fetched and fetch them again on resume,
                    # up to 1 MiB a partition each time the notifier filled up: behind a
                    # backlog the broker sent the due topic ~50 times over (issue 17). Fetched
                    # records stay buffered meanwhile; aiokafka fetches a partition again only
                    # once they are taken. Heartbeats and rebalances need no poll.
                    # (An event, not asyncio.wait on the tasks: that would add and remove
                    # a callback on each of the max_in_flight tasks for every task that ends.)
                    self._task_done.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.tuning.busy_poll):
                            await self._task_done.wait()
                    batches = {}
                else:
                    # Full for long (SMTP away?): keep polling so the group keeps us
                    # (max.poll.interval.ms), fetching nothing until tasks finish.
                    if not paused:
                        consumer.pause(*consumer.assignment())
                        paused = True
                    batches = await consumer.getmany(timeout_ms=100, max_records=1)
                now_ms = time.time() * 1000
                for tp, records in batches.items():
                    for rec in records:
                        STAGE_DUE_WAIT.observe(max(0.0, now_ms - rec.timestamp) / 1000)
                        self._tracker.add(tp, rec.offset)
                        task = asyncio.create_task(self._work(tp, rec))
                        self._tasks.add(task)
                        task.add_done_callback(self._ended)
                if (loop.time() - last_commit >= self.tuning.commit_interval
                        and (self._committing is None or self._committing.done())):
                    # In the background: fetching and dispatching never wait for a commit.
                    self._committing = asyncio.create_task(self._commit_now())
                    last_commit = loop.time()
        finally:
            await self._shutdown()

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # A full notifier refills by an eighth of max_in_flight at a time: woken for every
        # task that ends, it would fetch and dispatch one record a turn (CPU per mail).
        max_in_flight = self.tuning.max_in_flight
        if len(self._tasks) <= max_in_flight - max(1, max_in_flight // 8):
            self._task_done.set()

    async def _commit_now(self) -> None:
        try:
            await self._in.commit()
        except Exception as exc:  # noqa: BLE001 - Kafka or SQL trouble: the next commit retries
            log.error("offset commit of %s failed (%s: %s); retrying at the next interval",
                      self.topics.due, type(exc).__name__, exc)

    async def _shutdown(self, grace: float = 5.0) -> None:
        await cancel_and_wait(self._sweeper)  # a held row it was at stays held: swept again
        if self._committing is not None:
            await self._committing  # _commit_now reports its own failures
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            for result in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(result, Exception):  # _work handles its own: a bug if here
                    log.error("an invitation task ended with %s: %s", type(result).__name__,
                              result)
        await self._in.final_commit()
        released = await self.db.run(store.release_claims, self.owner)
        if released:
            log.info("released %d unfinished invitations for the next owner", released)
        await self._in.stop()
        self.running = False

    async def _flush_published(self) -> None:
        # Before offsets move past them: a replay then finds these outcomes already out.
        if self._published:
            ids = set(self._published)  # stay "published" here until SQL says so too
            await self.db.tx(store.mark_published, ids)
            self._published -= ids

    async def _work(self, tp: TopicPartition, rec: ConsumerRecord[bytes, bytes]) -> None:
        fetched = time.perf_counter()
        try:
            req = codec.decode_as("InvitationRequested", rec.value)
        except codec.CodecError as exc:
            # Nothing to mail and no automation to tell: never skipped, set aside on the
            # dead-letter topic (its offset is committed only once Kafka has it there).
            log.error("undecodable record on %s partition %d offset %d: %s",
                      tp.topic, tp.partition, rec.offset, exc)
            INVITATIONS_FAILED.labels(reason="undecodable").inc()
            await self._set_aside(rec, f"The invitation cannot be decoded: {exc}.")
            self._tracker.done(tp, rec.offset)
            return
        INVITATION_AGE.labels(stage="queued").observe(_age(req))
        attempt = 0
        while True:
            try:
                await self.handle(req, fetched)
                break
            except Exception as exc:  # noqa: BLE001 - Kafka/SQL trouble or a bug: logged, retried
                # The offset stays uncommitted until this invitation has its outcome.
                attempt += 1
                log.error("invitation %s: %s: %s; retrying", req["invitation_id"],
                          type(exc).__name__, exc, exc_info=attempt == 1)
                await asyncio.sleep(backoff(attempt, self.tuning.backoff_base,
                                            self.tuning.backoff_max))
        # Not in a `finally`: a cancelled task (shutdown) must leave its offset uncommitted.
        self._tracker.done(tp, rec.offset)

    async def _set_aside(self, rec: ConsumerRecord[bytes, bytes], detail: str) -> None:
        t = self.tuning
        await events.set_aside(self.producer, self.topics.dlq, rec, detail,
                               lambda attempt: backoff(attempt, t.backoff_base, t.backoff_max))

    # --- one invitation ---------------------------------------------------------------

    async def handle(self, req: dict[str, Any], fetched: float | None = None,
                     swept: bool = False) -> dict[str, Any] | None:
        """Decide, send and report one invitation; returns the outcome published. `swept`:
        a held one the sweep picked up (issue 15): an unknown automation is not waited for,
        and one another notifier decided meanwhile is not reported again (None)."""
        iid = req["invitation_id"]
        self._lock_users[iid] += 1
        lock = self._locks.setdefault(iid, asyncio.Lock())
        try:
            async with lock:  # the same invitation twice in flight here: one after the other
                return await self._handle(req, fetched, swept)
        finally:
            self._lock_users[iid] -= 1
            if self._lock_users[iid] == 0:
                del self._lock_users[iid]
                self._locks.pop(iid, None)

    async def _handle(self, req: dict[str, Any], fetched: float | None,
                      swept: bool = False) -> dict[str, Any] | None:
        snap = await self._snapshot(req["automation_id"], wait=not swept)
        suppress = None
        hold = None
        if snap is None:
            suppress = "automation deleted"
        elif not snap.enabled:  # issue 15: it waits for the automation to be enabled again
            hold = store.Hold("automation disabled",
                              codec.encode("InvitationRequested", req))
        message_id = message_id_for(req["invitation_id"], self.mail_from)
        throttle = None
        if snap is not None and snap.throttle_days > 0:
            throttle = store.Throttle(snap.throttle_days,
                                      timedelta(seconds=snap.throttle_days * self.day_seconds))
        races = 0
        while True:
            t0 = time.perf_counter()
            try:
                c = await self.db.tx(self._claim, req, owner=self.owner, lease=self._lease,
                                      survey_name=snap.survey_name if snap else "",
                                      message_id=message_id, suppress_reason=suppress,
                                      throttle=throttle, hold=hold, expiry=self.hold_expiry)
            except IntegrityError:
                # Another notifier inserted this invitation (or its respondent) in the same
                # moment: its row decides; look again (not an error, so not logged as one).
                # A few times only: a constraint that keeps failing is a real error (_work).
                races += 1
                if races > 3:
                    raise
                log.debug("invitation %s: claimed elsewhere at the same time; looking again",
                          req["invitation_id"])
                continue
            STAGE_CLAIM.observe(time.perf_counter() - t0)
            if c.kind != "busy":
                break
            await asyncio.sleep(self.tuning.busy_poll)  # another notifier is sending it

        if c.kind == "final":
            told = c.outcome_published or req["invitation_id"] in self._published
            if swept and told:
                return None  # another notifier's sweep (or a replay) decided and said it
            if told:
                out = events.outcome(req, "duplicate", attempts=c.attempts,
                                     reason=f"already {c.status}", message_id=c.message_id)
            else:  # decided before a crash that came before its outcome was published
                out = events.outcome(req, c.status, attempts=c.attempts, reason=c.reason,
                                     smtp_code=c.smtp_code, message_id=c.message_id)
            return await self._emit(req, out)
        if c.kind == "suppressed":
            INVITATIONS_FAILED.labels(reason="suppressed").inc()
            return await self._emit(req, events.outcome(
                req, "suppressed", attempts=0, reason=c.reason or suppress, message_id=None))
        if c.kind == "held":  # not final: no failure, and said again when seen again
            return await self._emit(req, events.outcome(
                req, "held", attempts=0, reason=c.reason, message_id=None))
        if c.kind == "expired":
            INVITATIONS_FAILED.labels(reason="expired").inc()
            return await self._emit(req, events.outcome(
                req, "expired", attempts=0, reason=c.reason, message_id=None))
        if c.kind == "throttled":  # issue 16: a business rule, not an error of the automation
            INVITATIONS_FAILED.labels(reason="throttled").inc()
            return await self._emit(req, events.outcome(
                req, "throttled", attempts=0, reason=c.reason, message_id=None))
        if snap is None:  # a reclaimed row (a sender died mid-send) of an automation deleted since
            await self.db.tx(self._finish, req["invitation_id"], status=SUPPRESSED,
                             attempts=c.attempts, reason=suppress)
            INVITATIONS_FAILED.labels(reason="suppressed").inc()
            return await self._emit(req, events.outcome(
                req, "suppressed", attempts=c.attempts, reason=suppress, message_id=None))
        return await self._send(req, snap, c, message_id, fetched)

    async def _snapshot(self, automation_id: str, wait: bool = True
                        ) -> AutomationSnapshot | None:
        snap = self.config.get(automation_id)
        waited = 0.0
        while snap is None and wait and waited < self.tuning.unknown_automation_wait:
            await asyncio.sleep(0.1)
            waited += 0.1
            snap = self.config.get(automation_id)
        return snap

    async def _send(self, req: dict[str, Any], snap: AutomationSnapshot, c: store.SendClaim,
                    message_id: str, fetched: float | None) -> dict[str, Any]:
        link = f"{self.survey_base_url}/{c.token}"
        try:
            mail = invitation_mail(subject=snap.message.subject, body=snap.message.body,
                                   values=req.get("variables") or {}, link=link,
                                   to=req["email"].strip(), mail_from=self.mail_from,
                                   message_id=message_id)
        except MessageError as exc:
            return await self._fail(req, c.attempts, "invalid_email", str(exc), None,
                                    message_id)
        attempts = c.attempts
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            attempts += 1
            if attempts > 1:
                await self.db.tx(store.touch, req["invitation_id"], self.owner, attempts)
            try:
                t0 = time.perf_counter()
                await self.pool.send(mail, self.sender, [req["email"].strip()])
                STAGE_SMTP.observe(time.perf_counter() - t0)
            except SendError as exc:
                give_up = not exc.infrastructure and (
                    loop.time() - started > self.tuning.give_up_after)
                if exc.transient and not give_up:
                    SMTP_RETRIES.labels(kind=exc.kind).inc()
                    delay = backoff(attempts, self.tuning.backoff_base, self.tuning.backoff_max)
                    log.warning("invitation %s attempt %d: %s; retry in %.1fs",
                                req["invitation_id"], attempts, scrub(exc.reason), delay)
                    await asyncio.sleep(delay)
                    continue
                kind = ("smtp_permanent" if not exc.transient else "smtp_transient_exhausted")
                if exc.kind == SMTPUTF8_UNSUPPORTED:
                    kind = exc.kind
                return await self._fail(req, attempts, kind, scrub(exc.reason), exc.code,
                                        message_id)
            break
        INVITATION_AGE.labels(stage="sent").observe(_age(req))
        if fetched is not None:
            NOTIFIER_SECONDS.observe(time.perf_counter() - fetched)
        await self.db.tx(self._finish, req["invitation_id"], status=SENT, attempts=attempts,
                          smtp_code=250, automation_id=req["automation_id"])
        INVITATIONS_SENT.inc()
        return await self._emit(req, events.outcome(req, "sent", attempts=attempts,
                                                    smtp_code=250, message_id=message_id))

    async def _fail(self, req: dict[str, Any], attempts: int, kind: str, reason: str,
                    code: int | None, message_id: str) -> dict[str, Any]:
        await self.db.tx(self._finish, req["invitation_id"], status="failed",
                          attempts=attempts, reason=f"{kind}: {reason}", smtp_code=code)
        INVITATIONS_FAILED.labels(reason=kind).inc()
        log.error("invitation %s of automation %s failed (%s): %s", req["invitation_id"],
                  req["automation_id"], kind, reason)
        detail = {
            "smtp_permanent": f"The mail server refused an invitation permanently "
                              f"(SMTP {code}).",
            "smtp_transient_exhausted": f"The mail server kept refusing an invitation "
                                        f"temporarily (last SMTP {code}); gave up after "
                                        f"{attempts} attempts.",
            "invalid_email": "The respondent's e-mail address cannot be used in a mail "
                             "header.",
            SMTPUTF8_UNSUPPORTED: "The respondent's e-mail address has non-ASCII characters "
                                  "before the @ and the mail server does not offer SMTPUTF8 "
                                  "(check HOOKSTREAM_SMTP_UTF8 and the server).",
        }.get(kind, f"The invitation could not be sent ({kind}).")
        await events.publish(self.producer, self.topics.errors, req["automation_id"],
                             "AutomationError", events.invitation_error(req, kind, detail))
        return await self._emit(req, events.outcome(
            req, "failed", attempts=attempts, reason=f"{kind}: {reason}", smtp_code=code,
            message_id=message_id))

    async def _emit(self, req: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        await events.publish(self.producer, self.topics.outcomes, req["invitation_id"],
                             "InvitationOutcome", out)
        INVITATION_OUTCOMES.labels(status=out["status"]).inc()
        if out["status"] not in ("duplicate", "held"):  # held: its final outcome is to come
            self._published.add(req["invitation_id"])
        return out

    # --- held invitations (issue 15) ---------------------------------------------------

    def _config_changed(self, automation_id: str, snap: AutomationSnapshot | None) -> None:
        if snap is None or snap.enabled:  # enabled again or deleted: its held ones can go
            self._wake_sweep.set()

    async def _sweep_held(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake_sweep.wait(), self.tuning.held_sweep_interval)
            except TimeoutError:
                pass  # the interval: look for held invitations that expired meanwhile
            self._wake_sweep.clear()
            if not self.config.ready.is_set():
                continue  # an automation not loaded yet is not a deleted one
            try:
                more = await self.sweep_once()
            except Exception as exc:  # noqa: BLE001 - SQL trouble: the next interval retries
                log.error("sweeping held invitations failed (%s: %s); retrying in %.0fs",
                          type(exc).__name__, exc, self.tuning.held_sweep_interval)
                continue
            if more:
                self._wake_sweep.set()

    async def sweep_once(self) -> bool:
        """Send, expire or drop the held invitations that no longer wait; True when there may
        be more than one batch of them."""
        disabled = [i for i, snap in self.config.all().items() if not snap.enabled]
        cutoff = datetime.now(UTC) - self.hold_expiry
        rows = await self.db.run(store.held, disabled=disabled, cutoff=cutoff,
                                 lease=self._lease, limit=self.tuning.held_sweep_batch)
        reqs = []
        for row in rows:
            try:
                reqs.append(codec.decode_as("InvitationRequested", row.request))
            except codec.CodecError as exc:  # stays held and listed: nothing is dropped
                log.error("held invitation %s cannot be decoded: %s", row.invitation_id, exc)
        step = max(1, self.tuning.max_in_flight)
        failed = 0
        for i in range(0, len(reqs), step):
            results = await asyncio.gather(
                *(self.handle(r, swept=True) for r in reqs[i:i + step]),
                return_exceptions=True)
            for req, result in zip(reqs[i:i + step], results, strict=True):
                if isinstance(result, Exception):  # stays held: the next sweep retries
                    failed += 1
                    log.error("held invitation %s: %s: %s", req["invitation_id"],
                              type(result).__name__, result)
        HELD_WAITING.set(await self.db.run(store.held_count))
        return len(rows) == self.tuning.held_sweep_batch and failed < len(rows)


def _age(req: dict[str, Any]) -> float:
    """Seconds since the invitation's webhook was received at ingress."""
    received = req["received_at"]
    ms = received if isinstance(received, int) else received.timestamp() * 1000
    return max(0.0, time.time() - ms / 1000)
