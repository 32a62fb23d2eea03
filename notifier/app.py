"""The notifier process: invitations and error alerts, with their shared parts.

Start order: the probe server (`/healthz`, `/readyz`, `/metrics` on HOOKSTREAM_NOTIFIER_PORT,
so liveness answers from the first moment), schema migration, topics, the config cache
(ready = caught up), the outcome producer (idempotent, acks=all), then both consumers.
`/readyz` names its checks: config loaded, each consumer in its group, the database answers,
the SMTP server takes a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from automations.config_cache import ConfigCache
from core.kafka import clients
from core.kafka.clients import ConnectGate, KafkaConnection
from core.kafka.plan import TopicGate
from core.kafka.topics import Topics
from core.serving import Failed, ProbeServer
from core.settings import Settings
from core.tasks import cancel_and_wait
from notifier.admin_client import AdminClient
from notifier.alerts import AlertService
from notifier.invitations import InvitationService, Tuning
from notifier.mailer import SmtpPool
from notifier.migrations import migrate
from notifier.smtp_config import SmtpConfig
from notifier.store import Db

log = logging.getLogger(__name__)

# A readiness answer must come before the caller's own timeout (compose: 4 s).
_CHECK_TIMEOUT = 2.0


def _select_one(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        s.execute(text("SELECT 1"))


class Notifier:
    def __init__(self, settings: Settings, *, tuning: Tuning | None = None,
                 group_id: str | None = None, http: bool = True,
                 migrate_db: bool = True) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.topic_gate = TopicGate(settings)
        self.tuning = tuning or Tuning()
        # Behind the topic prefix, like the topics: two deployments never share a group.
        self.group_id = group_id or f"{settings.topic_prefix}hookstream-notifier"
        self.http = http
        self.migrate_db = migrate_db
        self.smtp = SmtpConfig.from_url(settings.smtp_url.get_secret_value())
        self.kafka = KafkaConnection.from_settings(settings)
        self.kafka_gate = ConnectGate(self.kafka, "the notifier")
        self._tasks: list[asyncio.Task[None]] = []
        self.config: ConfigCache | None = None
        self.db: Db | None = None
        self.pool: SmtpPool | None = None
        self.invitations: InvitationService | None = None
        self.alerts: AlertService | None = None
        self._parts: contextlib.AsyncExitStack | None = None

    async def start(self) -> None:
        s = self.settings
        stack = contextlib.AsyncExitStack()
        self._parts = stack
        try:
            if self.http:
                server = ProbeServer(s.metrics_host, s.notifier_port, self.readiness,
                                     name="notifier")
                await server.start()
                stack.push_async_callback(server.stop)
            # Until Kafka answers: said once why not, and /readyz names the reason.
            await self.kafka_gate.wait()
            if self.migrate_db:
                await asyncio.to_thread(migrate, s.database_url)
            # Creates what is missing, or (creation off) waits, not ready, until it exists.
            await self.topic_gate.wait()
            db = self.db = Db(s.database_url)
            stack.push_async_callback(db.close)
            self.config = ConfigCache(self.kafka, self.topics.config)
            await self.config.start()
            stack.push_async_callback(self.config.stop)
            # Outcomes come after the mail is accepted, so their latency is nobody's wait: a
            # longer linger packs a burst's outcomes into fewer produce requests (CPU).
            producer = clients.producer(self.kafka, acks="all", enable_idempotence=True,
                                        linger_ms=20)
            await producer.start()
            stack.push_async_callback(producer.stop)
            pool = self.pool = SmtpPool(self.smtp, s.smtp_concurrency)
            stack.push_async_callback(pool.close)
            alert_pool = SmtpPool(self.smtp, 1)  # alerts never queue behind invitations
            stack.push_async_callback(alert_pool.close)
            # Its own token: it can disable and enable automations, nothing else.
            admin = AdminClient(s.admin_url, s.notifier_admin_token.get_secret_value())
            stack.push_async_callback(admin.close)
            self.invitations = InvitationService(
                bootstrap=self.kafka, topics=self.topics, config=self.config,
                pool=pool, producer=producer, db=db, survey_base_url=s.survey_base_url,
                mail_from=s.mail_from, group_id=self.group_id, tuning=self.tuning,
                day_seconds=s.day_seconds,
                hold_expiry=timedelta(seconds=s.hold_expiry_days * s.day_seconds),
                dbapi_claim=s.notifier_dbapi_claim)
            self.alerts = AlertService(
                bootstrap=self.kafka, topics=self.topics, config=self.config,
                pool=alert_pool, db=db, admin=admin, mail_from=s.mail_from,
                interval=s.alert_interval_seconds, disable_after=s.disable_after,
                admin_url=s.admin_url, group_id=f"{self.group_id}-alerts", producer=producer)
            for service in (self.invitations, self.alerts):
                self._tasks.append(asyncio.create_task(service.run(),
                                                       name=type(service).__name__))
        except BaseException:
            await stack.aclose()
            raise
        log.info("notifier started: SMTP %s, pool of %d", self.smtp.safe_url(),
                 s.smtp_concurrency)

    def consuming(self) -> dict[str, bool]:
        """The config is loaded and each consumer runs in its group."""
        return {
            # `is not None`: an empty ConfigCache is falsy (it has a length).
            "config_loaded": self.config is not None and self.config.ready.is_set(),
            # Running and in its consumer group (partitions assigned, even if none).
            "invitations_consumer": self.invitations is not None and self.invitations.running
            and self.invitations.assigned,
            "alerts_consumer": self.alerts is not None and self.alerts.running
            and self.alerts.assigned,
        }

    async def readiness(self) -> dict[str, bool | Failed]:
        """`/readyz`: the topics there, consuming, and the database and the SMTP server
        usable. Liveness (`/healthz`) checks none of these: a broker or SMTP outage is waited
        out, not a reason to restart the process."""
        database, smtp = await asyncio.gather(self._database_answers(), self._smtp_usable())
        return {"kafka": self.kafka_gate.check(), "topics": self.topic_gate.check(),
                **self.consuming(), "database": database, "smtp": smtp}

    async def _database_answers(self) -> bool:
        if self.db is None:
            return False
        try:
            await asyncio.wait_for(self.db.run(_select_one), _CHECK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; said so
            log.warning("readiness: the database does not answer: %s", type(exc).__name__)
            return False
        return True

    async def _smtp_usable(self) -> bool:
        if self.pool is None:
            return False
        try:
            return await asyncio.wait_for(self.pool.check(), _CHECK_TIMEOUT)
        except TimeoutError:
            log.warning("readiness: the SMTP server did not answer within %.0f s",
                        _CHECK_TIMEOUT)
            return False

    async def wait_running(self, timeout: float = 30.0) -> None:
        """Until the config is loaded and both consumers are in their groups."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not all(self.consuming().values()):
            for task in self._tasks:
                if task.done():
                    task.result()  # raise what stopped it
            if loop.time() > deadline:
                raise TimeoutError("the notifier's consumers did not start")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for service in (self.invitations, self.alerts):
            if service is not None:
                await service.stop()
        if self._tasks:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    log.error("a notifier consumer ended with %s: %s", type(r).__name__, r)
            self._tasks.clear()
        if self._parts is not None:
            await self._parts.aclose()
            self._parts = None

    async def __aenter__(self) -> Notifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly (offsets committed, claims released)."""
    # The SQL thread is CPU-bound while a batch runs; the event loop gives the GIL up at every
    # poll and would wait up to the default 5 ms each time to get it back (a convoy that
    # stalls SMTP and Kafka I/O behind every batch). 1 ms keeps the loop responsive.
    sys.setswitchinterval(0.001)
    notifier = Notifier(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Start-up can wait (for topics someone else creates): a signal meanwhile stops it.
    starting = asyncio.create_task(notifier.start(), name="notifier-start")
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([starting, waiter], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        await cancel_and_wait(starting)  # start() closes what it had opened
        return
    if starting.exception() is not None:
        waiter.cancel()
        starting.result()  # raise why it could not start
    try:
        done, _ = await asyncio.wait([waiter, *notifier._tasks],
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            for task in done:
                task.result()  # a consumer crashed: raise it (after the cleanup below)
    finally:
        await notifier.stop()
