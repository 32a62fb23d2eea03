"""Experiment: does Faust's own `processing_guarantee="exactly_once"` survive a SIGKILL?

The same transformation as the worker (streams/transform.py) in a plain Faust agent with
exactly_once, and the same kill scenario as tests/streams/test_exactly_once.py: 5,000
records, SIGKILL mid-stream, restart, then count `invitations.due` as a read_committed
reader. Prints `faust_eos: distinct=… records=… duplicates=… missing=…` per round.
Not part of the worker: it documents why the worker uses its own transactional loop.
`python bench/faust_eos.py [--rounds N]` (HOOKSTREAM_KAFKA_BOOTSTRAP, else its own broker).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
from aiokafka import TopicPartition  # noqa: E402

from bench.streams import delete_topics  # noqa: E402
from bench.streams_common import WorkerProcess, broker, kafka, replication  # noqa: E402
from core.kafka import clients  # noqa: E402
from core.kafka.topics import Topics, ensure_topics  # noqa: E402
from schemas import codec  # noqa: E402

TOTAL = 5000


def run_faust_worker() -> None:
    import faust

    from automations.config_cache import ConfigCache
    from core.settings import get_settings
    from streams.records import RawRecord
    from streams.transform import Transformer

    s = get_settings()
    topics = Topics(s.topic_prefix)
    app = clients.faust_app(kafka(s.kafka_bootstrap), f"{s.topic_prefix}faust-eos",
                    processing_guarantee="exactly_once", store="memory://",
                    web_enabled=False, topic_partitions=3, broker_commit_interval=0.5,
                    broker_session_timeout=10.0, broker_heartbeat_interval=1.0,
                    datadir=str(Path(s.var_dir) / "faust-eos"))
    source = app.topic(topics.raw, key_serializer="raw", value_serializer="raw")
    sinks = {name: app.topic(name, key_serializer="raw", value_serializer="raw")
             for name in (topics.due, topics.scheduled, topics.dlq, topics.errors)}
    config = ConfigCache(kafka(s.kafka_bootstrap), topics.config)
    transformer = Transformer(topics, config.get, s.day_seconds)

    @app.agent(source)
    async def process(stream: faust.Stream) -> None:
        if not config.ready.is_set():
            await config.start()
        async for event in stream.events():
            m = event.message
            headers = list(m.headers.items()) if isinstance(m.headers, Mapping) \
                else list(m.headers or [])
            for o in transformer.transform(RawRecord(m.key, m.value, headers, m.partition,
                                                     m.offset, int(m.timestamp * 1000))):
                await sinks[o.topic].send(key=o.key, value=o.value, headers=o.headers)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "info"]
    app.main()


async def count_due(bootstrap: str, topic: str, isolation: str = "read_committed") -> list:
    consumer = clients.consumer(kafka(bootstrap), isolation_level=isolation,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records = []
        while batches := await consumer.getmany(timeout_ms=1000, max_records=10000):
            for b in batches.values():
                records += b
        return records
    finally:
        await consumer.stop()


async def one_round(bootstrap: str, tmp: Path) -> str:
    topics = Topics(f"eos{uuid.uuid4().hex[:8]}.")
    await ensure_topics(kafka(bootstrap), topics, 3, **replication())
    from tests.streams.conftest import make_snapshot

    producer = clients.producer(kafka(bootstrap), acks="all", linger_ms=5,
                                enable_idempotence=True)
    await producer.start()
    worker = WorkerProcess(bootstrap, topics.prefix, tmp / topics.prefix,
                           command=(str(Path(__file__).resolve()), "--worker"), name="faust")
    try:
        await producer.send_and_wait(topics.config, codec.encode(
            "AutomationSnapshot", make_snapshot("auto-eos").to_record()), key=b"auto-eos")
        worker.start()
        now = str(int(time.time() * 1000)).encode()

        async def feed() -> None:
            for e in range(TOTAL // 5):
                body = orjson.dumps([{"email": f"r{e * 5 + j}@example.com", "name": "R"}
                                     for j in range(5)])
                await producer.send(topics.raw, body, key=b"auto-eos", headers=[
                    ("content-type", b"application/json"), ("received-at", now),
                    ("request-id", f"ev-{e}".encode())])
                if e % 25 == 24:
                    await producer.flush()
                    await asyncio.sleep(0.1)  # paced: the worker is busy when it is killed
            await producer.flush()

        # Wait for the worker to produce, then feed and kill it a quarter of the way in.
        offsets = clients.consumer(kafka(bootstrap), enable_auto_commit=False)
        await offsets.start()
        tps = [TopicPartition(topics.due, p) for p in range(3)]
        feeder = asyncio.create_task(feed())
        killed, out = False, 0
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                out = sum((await offsets.end_offsets(tps)).values())  # incl. txn markers
                if out >= TOTAL // 4:
                    worker.proc.kill()  # SIGKILL, by pid
                    worker.proc.wait(10)
                    killed = True
                    break
                await asyncio.sleep(0.05)
        finally:
            await offsets.stop()
        await feeder
        if not killed:
            return "faust_eos: no output within 120s; see " + str(worker.log_path)
        worker.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            records = await count_due(bootstrap, topics.due)
            if len({r.key for r in records}) >= TOTAL:
                break
            await asyncio.sleep(2)
        await asyncio.sleep(3)
        records = await count_due(bootstrap, topics.due)
        keys = collections.Counter(r.key for r in records)
        dups = sum(n - 1 for n in keys.values() if n > 1)
        return (f"faust_eos: killed at {out} out; distinct={len(keys)} "
                f"records={len(records)} duplicates={dups} missing={TOTAL - len(keys)} "
                f"(log {worker.log_path})")
    finally:
        worker.stop()
        await producer.stop()
        await delete_topics(bootstrap, topics)


async def main(rounds: int) -> None:
    with broker() as bootstrap:
        tmp = Path(tempfile.mkdtemp(prefix="faust-eos-"))
        for _ in range(rounds):
            print(await one_round(bootstrap, tmp), flush=True)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        run_faust_worker()
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        parser.add_argument("--rounds", type=int, default=1)
        asyncio.run(main(parser.parse_args().rounds))
