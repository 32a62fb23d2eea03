"""Consume `automations.errors`: record each error, mail the automation's error recipients in
groups, and disable an automation that keeps failing.

- Every error is stored in `automation_errors` (idempotent by error_id), which is what
  `GET /v1/automations/{id}/errors` shows.
- Alerts: at most one mail per automation per `alert_interval_seconds`, with counts by kind
  and a few examples (kind, field, detail: never a respondent's values). Recipients and the
  on/off switch are read from the newest snapshot when the mail goes out, so a change applies
  to the next alert. An error's offset is committed once its alert went out (or was not
  wanted), so a restart does not lose a pending alert.
- Auto-disable: errors lengthen the automation's failure streak (in SQL), a sent invitation
  ends it; at `disable_after` the automation is disabled through the admin API and the
  recipients are told why and how to enable it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from automations.config_cache import ConfigCache
from automations.snapshot import AutomationSnapshot
from core.kafka.clients import Kafka
from core.kafka.topics import Topics
from notifier import events, store
from notifier.admin_client import AdminClient
from notifier.consuming import ConsumerService, TrackedConsumer
from notifier.mailer import SendError, SmtpPool
from notifier.metrics import ALERTS_SENT, AUTOMATIONS_DISABLED, ERRORS_RECORDED
from notifier.render import plain_mail, sender_address
from schemas import codec

log = logging.getLogger(__name__)

# Errors caused by the automation being off or gone: they do not lengthen its streak.
# Issue 15: an address only SMTPUTF8 can carry is the deployment's mail setup, not the
# automation's fault (the worker refuses those as unsupported_email unless HOOKSTREAM_SMTP_UTF8).
NOT_COUNTED = frozenset({"automation_disabled", "unknown_automation", "unsupported_email",
                         "smtputf8_unsupported"})
# The ingress's counts of refused requests (kind refused_<code>): the integrator's errors.
# They are told, but never lengthen the streak: a misconfigured sender must not disable the
# automation for everyone else.
INGRESS = "ingress"
EXAMPLES = 5


def counts_toward_disable(err: dict[str, Any]) -> bool:
    return err["kind"] not in NOT_COUNTED and err.get("source") != INGRESS


@dataclass
class _Pending:
    """Errors of one automation not yet told to its recipients: the pipeline's (`counts`,
    `examples`) and the requests the ingress refused (`refused`, `refused_examples`)."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    refused_examples: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[tuple[TopicPartition, int]] = field(default_factory=list)

    def add(self, err: dict[str, Any], tp: TopicPartition, offset: int) -> None:
        if err.get("source") == INGRESS:
            self.refused[err["kind"]] += err.get("count") or 1
            if len(self.refused_examples) < EXAMPLES:
                self.refused_examples.append(err)
        else:
            self.counts[err["kind"]] += err.get("count") or 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(err)
        self.offsets.append((tp, offset))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


class AlertService(ConsumerService):
    def __init__(self, *, bootstrap: Kafka, topics: Topics, config: ConfigCache, pool: SmtpPool,
                 db: store.Db, admin: AdminClient, mail_from: str,
                 interval: float, disable_after: int, admin_url: str,
                 group_id: str = "hookstream-notifier-alerts",
                 producer: AIOKafkaProducer | None = None) -> None:
        # Pending alerts of partitions a rebalance takes away stay pending here: telling
        # twice beats not telling.
        super().__init__(TrackedConsumer(bootstrap=bootstrap, group_id=group_id,
                                         topic=topics.errors))
        self.topics = topics
        self.config = config
        self.pool = pool
        self.db = db
        self.admin = admin
        self.producer = producer  # sets undecodable records aside on the dead-letter topic
        self.mail_from = mail_from
        self.sender = sender_address(mail_from)
        self.interval = interval
        self.disable_after = disable_after
        self.admin_url = admin_url.rstrip("/")
        self._pending: dict[str, _Pending] = {}
        self._last_alert: dict[str, float] = {}  # loop time of the last alert per automation
        self._disabling: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        consumer = await self._in.start()
        self.running = True
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=min(200, self._tick_ms()),
                                                       max_records=500)
                work = []
                for tp, records in batches.items():
                    for rec in records:
                        self._tracker.add(tp, rec.offset)
                        work.append(self._on_error(tp, rec))
                # Together: their SQL shares one batched transaction (a flood stays cheap).
                await asyncio.gather(*work)
                await self._flush_due()
                await self._in.commit()
        finally:
            if self._disabling:  # let an auto-disable under way finish (bounded)
                await asyncio.wait(list(self._disabling.values()), timeout=15)
            await self._in.final_commit()
            await self._in.stop()
            self.running = False

    def _tick_ms(self) -> int:
        return max(20, int(self.interval * 1000 / 4))

    # --- each error -------------------------------------------------------------------

    async def _on_error(self, tp: TopicPartition, rec: ConsumerRecord[bytes, bytes]) -> None:
        try:
            err = codec.decode_as("AutomationError", rec.value)
        except codec.CodecError as exc:
            log.error("undecodable record on %s partition %d offset %d: %s", tp.topic,
                      tp.partition, rec.offset, exc)
            await self._set_aside(rec, f"The error record cannot be decoded: {exc}.")
            self._tracker.done(tp, rec.offset)
            return
        counts = counts_toward_disable(err)
        recorded = await self._with_retry(store.record_error, err, counts=counts)
        assert isinstance(recorded, store.Recorded)
        if not recorded.new:
            # Seen before: recorded and counted then. Its alert may not have gone out if we
            # stopped in between, so it is told again (at least once, never silently lost).
            log.debug("error %s redelivered", err["error_id"])
        else:
            ERRORS_RECORDED.labels(kind=err["kind"]).inc(err.get("count") or 1)
        self._pending.setdefault(err["automation_id"], _Pending()).add(err, tp, rec.offset)
        if counts and recorded.consecutive >= self.disable_after:
            self._start_disable(err["automation_id"], recorded.consecutive)

    async def _set_aside(self, rec: ConsumerRecord[bytes, bytes], detail: str) -> None:
        """Never skipped: to the dead-letter topic before its offset may be committed."""
        if self.producer is None:
            raise RuntimeError("AlertService needs a producer to set undecodable records "
                               "aside")
        await events.set_aside(self.producer, self.topics.dlq, rec, detail,
                               lambda attempt: min(30.0, 0.2 * 2 ** attempt))

    async def _with_retry(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await self.db.tx(fn, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - SQL unavailable: logged, retried
                attempt += 1
                log.error("recording an automation error failed (%s: %s); retrying",
                          type(exc).__name__, exc)
                await asyncio.sleep(min(30.0, 0.2 * 2 ** attempt))

    # --- grouped alerts ---------------------------------------------------------------

    async def _flush_due(self) -> None:
        now = asyncio.get_running_loop().time()
        for automation_id in list(self._pending):
            last = self._last_alert.get(automation_id)
            if last is None:
                last = await self._last_alert_from_sql(automation_id, now)
            if now - last < self.interval:
                continue
            pending = self._pending[automation_id]
            snap = self.config.get(automation_id)
            if _wants_mail(snap):
                assert snap is not None
                try:
                    await self._mail(snap, *_alert_text(snap, pending, self.admin_url))
                except SendError as exc:
                    log.warning("alert for automation %s not sent (%s); next tick tries "
                                "again", automation_id, exc.reason)
                    continue
                ALERTS_SENT.inc()
                self._last_alert[automation_id] = now
                await self.db.run(store.set_last_alert_at, automation_id, datetime.now(UTC))
            del self._pending[automation_id]
            for tp, offset in pending.offsets:
                self._tracker.done(tp, offset)

    async def _last_alert_from_sql(self, automation_id: str, now: float) -> float:
        at = await self.db.run(store.last_alert_at, automation_id)
        if at is None:
            return float("-inf")
        age = (datetime.now(UTC) - at).total_seconds()
        self._last_alert[automation_id] = now - age
        return now - age

    async def _mail(self, snap: AutomationSnapshot, subject: str, text: str) -> None:
        recipients = list(snap.error_recipients)
        await self.pool.send(plain_mail(subject=subject, text=text, to=recipients,
                                        mail_from=self.mail_from), self.sender, recipients)

    # --- auto-disable -----------------------------------------------------------------

    def _start_disable(self, automation_id: str, consecutive: int) -> None:
        """Disable in the background (the admin API may be slow or away): errors keep being
        recorded meanwhile. One attempt per automation at a time; a failed attempt is retried
        by the automation's next error, as its streak stays at the threshold."""
        if automation_id in self._disabling:
            return
        task = asyncio.create_task(self._disable(automation_id, consecutive),
                                   name=f"disable:{automation_id}")
        self._disabling[automation_id] = task
        task.add_done_callback(lambda _: self._disabling.pop(automation_id, None))

    async def _disable(self, automation_id: str, consecutive: int) -> None:
        snap = self.config.get(automation_id)
        if snap is not None and not snap.enabled:
            await self.db.run(store.mark_disabled, automation_id)
            return
        pending = self._pending.get(automation_id, _Pending())
        kinds = ", ".join(f"{k} ({n})" for k, n in pending.counts.most_common()) or "errors"
        reason = (f"Disabled automatically after {consecutive} consecutive failures "
                  f"(most recent: {kinds}).")
        result = None
        for attempt in range(3):
            result = await self.admin.disable(automation_id, reason)
            if result.ok or result.gone:
                break
            await asyncio.sleep(0.5 * 2 ** attempt)
        assert result is not None
        if result.gone:
            log.info("automation %s reached %d failures but no longer exists", automation_id,
                     consecutive)
            await self.db.run(store.mark_disabled, automation_id)
            return
        if not result.ok:
            # The streak stays at the threshold: the next error of this automation tries again.
            log.error("could not disable automation %s after %d failures: %s", automation_id,
                      consecutive, result.detail)
            return
        await self.db.run(store.mark_disabled, automation_id)
        AUTOMATIONS_DISABLED.inc()
        log.warning("automation %s disabled after %d consecutive failures", automation_id,
                    consecutive)
        if _wants_mail(snap):
            assert snap is not None
            subject, text = _disabled_text(snap, consecutive, pending, reason, self.admin_url)
            try:
                await self._mail(snap, subject, text)
                ALERTS_SENT.inc()
            except SendError as exc:
                log.error("the notice that automation %s was disabled could not be mailed: %s",
                          automation_id, exc.reason)


def _wants_mail(snap: AutomationSnapshot | None) -> bool:
    return bool(snap and snap.error_notifications_enabled and snap.error_recipients)


def _examples(errors: list[dict[str, Any]]) -> list[str]:
    lines = []
    for e in errors:
        where = f" field {e['field']}" if e.get("field") else ""
        at = e["at"].strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(e["at"], datetime) else ""
        ref = f" (event {e['event_id']}" + (f", record {e['record_index']}"
                                            if e.get("record_index") is not None else "") + ")" \
            if e.get("event_id") else ""
        lines.append(f"- {at} {e['kind']}{where}: {e['detail']}{ref}")
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _alert_text(snap: AutomationSnapshot, pending: _Pending, admin_url: str) -> tuple[str, str]:
    n, r = pending.total, pending.refused_total
    told = " and ".join(x for x in (_plural(n, "error") if n else "",
                                    _plural(r, "refused request") if r else "") if x)
    subject = f"[hookstream] {told} in automation {snap.name}"
    lines = [f"The automation \"{snap.name}\" (survey \"{snap.survey_name}\") reported "
             f"{told}.", ""]
    if n:
        lines += ["By kind:", *[f"- {kind}: {count}" for kind, count in
                                pending.counts.most_common()], "",
                  f"Examples (at most {EXAMPLES}):", *_examples(pending.examples), ""]
    if r:
        lines += ["Webhook requests the ingress refused, by error code (the sender's to fix: "
                  "a rotated-out key or secret, bad JSON, too large, too fast, the automation "
                  "disabled; these never disable the automation):",
                  *[f"- {kind}: {count}" for kind, count in pending.refused.most_common()], "",
                  *_examples(pending.refused_examples), ""]
    text = "\n".join([
        *lines,
        "All recent errors: GET "
        f"{admin_url}/v1/automations/{snap.id}/errors", "",
        "You receive this mail because you are an error recipient of this automation.",
    ]) + "\n"
    return subject, text


def _disabled_text(snap: AutomationSnapshot, consecutive: int, pending: _Pending, reason: str,
                   admin_url: str) -> tuple[str, str]:
    subject = f"[hookstream] automation {snap.name} was disabled"
    text = "\n".join([
        f"The automation \"{snap.name}\" (survey \"{snap.survey_name}\") has been disabled.",
        "",
        f"Why: {reason}",
        "While it is disabled its webhook answers 409 and no invitations are sent.", "",
        "Recent errors:", *_examples(pending.examples), "",
        "Fix the cause, then enable it again with either of:",
        f"  hookstream automations enable {snap.id}",
        f"  POST {admin_url}/v1/automations/{snap.id}/enable",
        "     (with the header Authorization: Bearer <admin token>)", "",
        f"All recent errors: GET {admin_url}/v1/automations/{snap.id}/errors",
    ]) + "\n"
    return subject, text

