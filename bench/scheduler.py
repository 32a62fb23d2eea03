"""Scheduler benchmark (`make bench-scheduler`).

COUNT invitations (default 1,000,000) are written to `invitations.scheduled` with due times
spread evenly over SPREAD seconds, starting LEAD seconds after the writing began (enough for
the worker to have stored them all, so all of them wait at once). The worker
(`python -m streams`, a subprocess) stores them (changelog + SQLite) and releases them to
`invitations.due`. Measured:
- the worker's peak RSS (VmHWM), and the most invitations waiting at once (its gauge);
- release lag: the time this process receives each released invitation (read_committed)
  minus its due_at; p50, p99, max. Receive time includes our own reading: pessimistic.
Prints `count=… peak_waiting=… worker_peak_rss_mib=… lag_p50_ms=… lag_p99_ms=…
lag_max_ms=… ingest_eps=…`. Uses HOOKSTREAM_KAFKA_BOOTSTRAP if set, else its own broker.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import TopicPartition  # noqa: E402

from bench.streams import delete_topics  # noqa: E402
from bench.streams_common import WorkerProcess, broker, kafka, replication  # noqa: E402
from core.kafka import clients  # noqa: E402
from core.kafka.topics import Topics, ensure_topics  # noqa: E402
from streams.batching import BatchSender  # noqa: E402
from streams.fast_avro import encode_invitation  # noqa: E402
from streams.records import Output  # noqa: E402


def invitation(i: int, due_ms: int, now_ms: int) -> bytes:
    return encode_invitation({
        "invitation_id": f"bench-{i}", "automation_id": "bench-automation",
        "automation_version": 1, "survey_id": "survey-bench", "event_id": f"ev-{i}",
        "record_index": 0, "email": f"respondent{i}@example.com",
        "variables": {"name": f"First{i}", "age": 18 + i % 60, "city": "Utrecht",
                      "member": i % 2 == 0, "signup": "2026-03-14", "total": 10 + i % 90},
        "received_at": now_ms, "due_at": due_ms, "delay_days": 3})


async def produce(bootstrap: str, topics: Topics, count: int, first_due: float,
                  spread: float) -> None:
    producer = clients.producer(kafka(bootstrap), acks="all", linger_ms=20,
                                max_batch_size=1024 * 1024, enable_idempotence=True)
    await producer.start()
    try:
        sender = BatchSender(producer)
        now_ms = int(time.time() * 1000)
        chunk = 20_000
        for start in range(0, count, chunk):
            outputs = []
            for i in range(start, min(count, start + chunk)):
                due = int((first_due + spread * i / count) * 1000)
                outputs.append(Output(topics.scheduled, f"bench-{i}".encode(),
                                      invitation(i, due, now_ms),
                                      [("due-at", str(due).encode())]))
            sent = await sender.send_all(outputs)
            await asyncio.gather(*(s.future for s in sent))
    finally:
        await producer.stop()


async def read_releases(bootstrap: str, topic: str, count: int, first_due: float,
                        spread: float, timeout: float) -> tuple[list[float], int]:
    """Lag (s) of every released invitation, and the number of duplicates seen."""
    consumer = clients.consumer(kafka(bootstrap), isolation_level="read_committed",
                                enable_auto_commit=False, fetch_max_wait_ms=50,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    lags: list[float] = []
    seen = bytearray(count)
    dups = 0
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while len(lags) - dups < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(lags) - dups} of {count} released")
            batches = await consumer.getmany(timeout_ms=200, max_records=50_000)
            received = time.time()
            for batch in batches.values():
                for r in batch:
                    i = int(r.key[6:])  # "bench-{i}": its due time follows from i
                    dups += seen[i]
                    seen[i] = 1
                    lags.append(received - (first_due + spread * i / count))
        return lags, dups
    finally:
        await consumer.stop()


async def main(count: int, spread: float, lead: float | None) -> None:
    lead = lead if lead is not None else max(30.0, count / 7000)
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        topics = Topics(f"bench{uuid.uuid4().hex[:8]}.")
        await ensure_topics(kafka(bootstrap), topics, 3, **replication())
        worker = WorkerProcess(bootstrap, topics.prefix, Path(tmp))
        worker.start("--loglevel", "warn")
        try:
            await worker.wait_ready()
            t0 = time.time()
            first_due = t0 + lead
            print(f"writing {count:,} invitations, due from +{lead:.0f}s over {spread:.0f}s",
                  flush=True)
            reader = asyncio.create_task(read_releases(
                bootstrap, topics.due, count, first_due, spread, timeout=lead + spread + 600))
            await produce(bootstrap, topics, count, first_due, spread)
            print(f"written in {time.time() - t0:.1f}s", flush=True)
            peak_waiting, stored_at = 0.0, None
            while not reader.done():
                waiting = await worker.metric("hookstream_scheduled_waiting")
                stored = await worker.metric("hookstream_invitations_scheduled_total")
                peak_waiting = max(peak_waiting, waiting)
                if stored_at is None and stored >= count:
                    stored_at = time.time()
                    print(f"all stored after {stored_at - t0:.1f}s; RSS now "
                          f"{worker.rss_kib('VmRSS') / 1024:.0f} MiB", flush=True)
                await asyncio.sleep(1.0)
            lags, dups = await reader
            rss = worker.rss_kib()
        finally:
            worker.stop()
            await delete_topics(bootstrap, topics)
        lags.sort()
        ingest = count / (stored_at - t0) if stored_at else 0.0
        print(f"count={count} peak_waiting={peak_waiting:.0f} "
              f"worker_peak_rss_mib={rss / 1024:.0f} "
              f"lag_p50_ms={lags[len(lags) // 2] * 1000:.0f} "
              f"lag_p99_ms={lags[int(len(lags) * 0.99)] * 1000:.0f} "
              f"lag_max_ms={lags[-1] * 1000:.0f} early={sum(1 for x in lags if x < 0)} "
              f"duplicates={dups} ingest_eps={ingest:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--spread", type=float, default=200.0,
                        help="seconds over which the due times are spread")
    parser.add_argument("--lead", type=float, default=None,
                        help="seconds from the start to the first due time (default: enough "
                             "to store them all first)")
    args = parser.parse_args()
    asyncio.run(main(args.count, args.spread, args.lead))
