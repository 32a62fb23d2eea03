"""The streams worker: a Faust app that runs the raw processor and the scheduler.

Faust provides the worker process, its lifecycle (start, signals, clean stop) and logging;
its own web server is off. The processing runs in two transactional aiokafka loops started
as a Faust service (`StreamsRuntime`), which also serves `/metrics`, `/healthz` (liveness:
the event loop answers; a rebalance or a broker outage does not fail it) and `/readyz`
(readiness, with named checks) on `HOOKSTREAM_WORKER_PORT` (`core.serving.ProbeServer`):
- `webhooks.raw` -> `invitations.due` / `invitations.scheduled` / `webhooks.dlq` /
  `automations.errors` (streams/raw_loop.py), consumer group `<prefix>hookstream-streams.raw`;
- `invitations.scheduled` -> `invitations.due` when due (streams/scheduler.py), consumer
  group `<prefix>hookstream-streams.scheduler`.
The Faust app id (and its own consumer group, which only holds Faust's leader topic) is
`<prefix>hookstream-streams`.

Why not Faust agents with `processing_guarantee="exactly_once"`: with the kill scenario of
tests/streams/test_exactly_once.py they left about 1,000 duplicates in 5,000 records
(bench/faust_eos.py); the aiokafka transactional loop (streams/txloop.py) leaves none.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import faust
import mode
from prometheus_client import REGISTRY

from automations.config_cache import ConfigCache
from core.kafka import clients
from core.kafka.clients import ConnectGate, KafkaConnection
from core.kafka.lag import Election, LagCollector, hookstream_groups
from core.kafka.plan import TopicGate
from core.kafka.topics import Topics
from core.logs import KAFKA_LOGGERS, install_repeat_filter
from core.serving import Failed, ProbeServer
from core.settings import Settings, get_settings
from streams.raw_loop import RawProcessor
from streams.scheduler import Scheduler

log = logging.getLogger(__name__)


def app_id(prefix: str) -> str:
    return f"{prefix}hookstream-streams"


def group_ids(prefix: str) -> dict[str, str]:
    """The consumer groups of the worker (for lag monitoring)."""
    return {"faust": app_id(prefix), "raw": f"{app_id(prefix)}.raw",
            "scheduler": f"{app_id(prefix)}.scheduler"}


def lag_exporter_group(prefix: str) -> str:
    """The workers' lag exporter election (core.kafka.lag.Election): commits nothing; under
    the worker's group prefix, so the worker's group ACL covers it."""
    return f"{app_id(prefix)}.lag-exporter"


def instance_id(settings: Settings) -> str:
    """Stable per worker across restarts, unique per host+port: Faust's static membership."""
    return f"{socket.gethostname()}-{settings.worker_port}"


class StreamsRuntime(mode.Service):
    """Config cache, raw processor and scheduler, started and stopped with the Faust app,
    and the worker's probe server."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.kafka = kafka = KafkaConnection.from_settings(settings)
        self.kafka_gate = ConnectGate(kafka, "the streams worker")
        self.probes = ProbeServer(host, settings.worker_port, self.readiness, name="worker",
)
        self.topics = Topics(settings.topic_prefix)
        self.topic_gate = TopicGate(settings)
        groups = group_ids(settings.topic_prefix)
        self.config = ConfigCache(kafka, self.topics.config)
        retries = {"max_attempts": settings.worker_max_attempts,
                   "backoff_s": settings.worker_retry_backoff_seconds,
                   "backoff_max_s": settings.worker_retry_backoff_max_seconds}
        self.processor = RawProcessor(kafka, self.topics, groups["raw"],
                                      self.config, settings.day_seconds,
                                      smtp_utf8=settings.smtp_utf8,
                                      max_depth=settings.ingress_max_depth,
                                      fetch_max_wait_ms=settings.worker_raw_fetch_wait_ms,
                                      commit_gap_ms=settings.worker_commit_gap_ms,
                                      **retries)
        state_dir = Path(settings.var_dir) / "scheduler" / settings.topic_prefix.rstrip(".")
        self.scheduler = Scheduler(kafka, self.topics, groups["scheduler"],
                                   state_dir, **retries)
        # Consumer lag of every hookstream group (this worker's and the notifier's), served on
        # the /metrics of one worker at a time as hookstream_consumer_lag{group,topic,partition}:
        # the workers elect it in a consumer group of their own on the (one-partition, empty)
        # Faust leader topic, so the lag is counted once however many workers run. Only groups
        # named as hookstream's are read: on a shared cluster most groups are not ours.
        self.lag = LagCollector(kafka, settings.topic_prefix, election=Election(
            kafka, lag_exporter_group(settings.topic_prefix), self.topics.faust_leader),
            group_prefix=hookstream_groups(settings.topic_prefix))
        self._lag_registered = False
        self.started_ok = False

    async def on_start(self) -> None:
        # Probes first: liveness answers while the rest starts (a port taken stops the worker
        # here, with the address in the error).
        await self.probes.start()
        # Faust's own clients start after this: until Kafka answers, the worker waits here,
        # says once why (wrong credentials, untrusted certificate, unreachable brokers) and
        # /readyz names the reason.
        await self.kafka_gate.wait()
        # In the background, so Faust's own start-up (its group) runs meanwhile: a restarted
        # worker is back within a couple of seconds. /readyz says when it is ready.
        self.add_future(self._start_parts())

    async def _start_parts(self) -> None:
        try:
            # Creates what is missing, or (creation off) waits, not ready, until it exists.
            await self.topic_gate.wait()
            await self.config.start(wait_ready=60.0)
            await asyncio.gather(self.scheduler.start(), self.processor.start())
            REGISTRY.register(self.lag)
            self._lag_registered = True
            await self.lag.start()
        except Exception as exc:
            log.exception("the streams runtime could not start")
            await self.crash(exc)  # stops the worker: a supervisor restarts it
            return
        self.started_ok = True
        log.info("streams runtime started (raw processor and scheduler)")
        await self._watch_parts()

    async def _watch_parts(self) -> None:
        """A loop that died does not come back by itself: stop the worker (a supervisor
        restarts it) rather than answer liveness while doing nothing."""
        while not self.should_stop:
            for name, part in (("raw loop", self.processor), ("scheduler", self.scheduler)):
                exc = part.failed()
                if exc is not None:
                    log.error("the %s failed; stopping the worker", name, exc_info=exc)
                    await self.crash(exc)
                    return
            await self.sleep(1.0)

    async def on_stop(self) -> None:
        self.started_ok = False
        if self._lag_registered:
            await self.lag.stop()
            REGISTRY.unregister(self.lag)
            self._lag_registered = False
        await self.processor.stop()
        await self.scheduler.stop()
        await self.config.stop()
        await self.probes.stop()  # last: liveness answers while the worker stops

    def readiness(self) -> dict[str, bool | Failed]:
        """`/readyz`: Kafka answering, the topics there, each part started, running, with its
        partitions, and making progress (a partition retrying one record, or none assigned
        long after a rebalance, is not)."""
        raw, scheduler = self.processor, self.scheduler
        return {
            "kafka": self.kafka_gate.check(),
            "topics": self.topic_gate.check(),
            "started": self.started_ok,  # topics there, both loops started
            "config_loaded": self.config.ready.is_set(),
            "raw_loop": _loop_check(raw),
            "scheduler": _loop_check(scheduler),
        }


def _loop_check(part: RawProcessor | Scheduler) -> bool | Failed:
    """A loop's readiness: running, with its partitions, making progress; else why not."""
    exc = part.failed()
    if exc is not None:
        return Failed(f"failed: {type(exc).__name__}")
    ok, why = part.loop.health()
    return True if ok else Failed(why)


def create_app(settings: Settings | None = None, host: str = "127.0.0.1") -> faust.App:
    s = settings or get_settings()
    (Path(s.var_dir) / "faust").mkdir(parents=True, exist_ok=True)
    app = clients.faust_app(
        KafkaConnection.from_settings(s), app_id(s.topic_prefix), store="memory://",
        datadir=str(Path(s.var_dir) / "faust"), topic_partitions=s.topic_partitions,
        producer_acks=-1,
        # Faust declares its leader topic itself: as the topic plan does (core/kafka/plan.py).
        topic_replication_factor=s.kafka_replication_factor,
        topic_allow_declare=s.kafka_create_topics,
        # The runtime serves /metrics and the probes (core.serving), as every service does.
        web_enabled=False,
        # Faust's group holds only its leader topic, and the runtime starts after Faust joined
        # it: static membership lets a restarted worker take its place at once.
        consumer_group_instance_id=f"{instance_id(s)}-faust",
        broker_session_timeout=10.0, broker_heartbeat_interval=1.0)
    app.hookstream_runtime = StreamsRuntime(s, host)  # type: ignore[attr-defined]
    return app  # run_worker gives the runtime to the Faust worker, which starts it


def run_worker(loglevel: str = "info", host: str | None = None) -> None:
    """Run the worker in this process until a signal stops it."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        log.info("uvloop not installed: running on the default asyncio loop")
    s = get_settings()
    app = create_app(host=host or s.metrics_host)
    # A broker outage is one line per interval with a count, not one per connection attempt.
    install_repeat_filter((*KAFKA_LOGGERS, "faust", "streams"), s.log_repeat_seconds)
    make_worker(app, loglevel).execute_from_commandline()


def make_worker(app: faust.App, loglevel: str = "info") -> faust.Worker:
    """The Faust worker that runs `app` and its runtime, without Faust's start-up spinner:
    at a log level of warn or above, the spinner sets the root logger to DEBUG (so that every
    record turns it) and leaves it there, so every aiokafka debug call built a record that
    the handler then dropped: ~9% of the worker's CPU at `--loglevel warn` (py-spy, issue 17)."""
    # A service given to the worker starts before the app, not after Faust's rebalance.
    worker = faust.Worker(app, app.hookstream_runtime, loglevel=loglevel)
    worker.spinner = None
    return worker
