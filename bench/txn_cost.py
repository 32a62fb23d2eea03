"""What one Kafka transaction of the worker's raw loop costs in CPU (issue 17).

A warm broker commits each batch quickly, so at 200 webhooks/s the worker runs one
transaction per one to four webhooks, and every transaction costs the worker its requests
(bench/README.md, "What a transaction costs the worker"). This repeats the loop's per-batch
Kafka work alone, through the code the worker runs (`streams.txloop.send_in_transaction`,
`BatchSender`, the producer `TransactionalLoop.producer_for` builds): a `read_committed`
consumer fetches one record of an input topic (one fetch request each), then one transaction
sends three outputs (two due invitations on a 6-partition topic and one counts record) with
the consumed offset and commits. Prints CPU-ms per transaction (`time.process_time`, and
/proc's utime and stime of the whole process) and the commit's wall-clock p50/p99.

    .venv/bin/python bench/txn_cost.py [--transactions 1000] [--warmup 100] [--requests]
        [--interval-ms 20] [--profile FILE]

Needs a broker: HOOKSTREAM_KAFKA_BOOTSTRAP, else a scratch broker of its own (a broker's
first minutes are slow: prefer a warm one). Runs on uvloop, as the worker. `--requests`
prints the Kafka requests per transaction by type; `--interval-ms 20` paces the
transactions (50/s) instead of running them back to back; `--profile FILE` writes a cProfile
(pstats) of the measured transactions in thread CPU time, not wall time (a loopback send that
wakes the broker is often preempted by it; the clock's own syscalls inflate short calls).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from aiokafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.kafka import clients  # noqa: E402
from hookstream.local.kafka import named_or_scratch_broker  # noqa: E402
from streams.records import Output  # noqa: E402
from streams.txloop import LoopConfig, TransactionalLoop, send_in_transaction  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")
REQUESTS: collections.Counter[str] = collections.Counter()


def count_requests() -> None:
    """Count every request the clients send, by type (costs the measured CPU a little)."""
    from aiokafka import client
    send = client.AIOKafkaClient.send

    async def counted(self, node_id, request, **kw):  # type: ignore[no-untyped-def]
        REQUESTS[type(request).__name__.removesuffix("Request")] += 1
        return await send(self, node_id, request, **kw)

    client.AIOKafkaClient.send = counted  # type: ignore[method-assign]


def proc_cpu_s() -> tuple[float, float]:
    """(utime, stime) of this process, all threads (bench/notifier.py reads their sum)."""
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


async def _topics(bootstrap: str, prefix: str) -> tuple[str, str, str]:
    from aiokafka.admin import NewTopic
    names = (f"{prefix}in", f"{prefix}due", f"{prefix}counts")
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(names[0], 1, 1), NewTopic(names[1], 6, 1),
                                   NewTopic(names[2], 1, 1)])
    finally:
        await admin.close()
    return names


async def run(bootstrap: str, transactions: int, warmup: int, profile: str | None,
              interval_s: float = 0.0) -> None:
    prefix = f"txcost-{uuid.uuid4().hex[:8]}-"
    src, due, counts = await _topics(bootstrap, prefix)
    total = transactions + warmup
    plain = clients.producer(bootstrap, linger_ms=0)
    await plain.start()
    try:
        # One record batch per input record: with max_partition_fetch_bytes=1 below each
        # fetch then returns one record, so every transaction follows a fetch of its own, as
        # in the worker at a rate where each webhook gets its own transaction.
        futures = []
        for i in range(total):
            batch = plain.create_batch()
            batch.append(key=b"k%d" % i, value=b"x" * 300, timestamp=None)
            futures.append(await plain.send_batch(batch, src, partition=0))
        await asyncio.gather(*futures)
    finally:
        await plain.stop()

    group = f"{prefix}group"
    tp = TopicPartition(src, 0)
    # The worker's own producer settings (linger, backoff, batch size, transaction timeout).
    loop = TransactionalLoop(LoopConfig(name="streams", bootstrap=bootstrap, group_id=group,
                                        topic=src), handler=None)  # type: ignore[arg-type]
    producer = await loop.producer_for(tp)
    consumer = clients.consumer(bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                fetch_max_wait_ms=clients.IDLE_FETCH_WAIT_MS,
                                max_partition_fetch_bytes=1)
    await consumer.start()
    consumer.assign([tp])
    partitions: dict[str, list[int]] = {}
    value = b"v" * 400
    headers = [("content-type", b"avro/binary"), ("x-request-id", b"r" * 26)]
    walls: list[float] = []
    # CPU time, not wall: a loopback send that wakes the broker may be preempted by it.
    profiler = cProfile.Profile(time.thread_time) if profile else None
    try:
        done = 0
        cpu0 = wall0 = 0.0
        proc0 = (0.0, 0.0)
        while done < total:
            if done == warmup:
                REQUESTS.clear()
                cpu0, proc0, wall0 = time.process_time(), proc_cpu_s(), time.perf_counter()
                if profiler:
                    profiler.enable()
            if interval_s:
                await asyncio.sleep(interval_s)  # the pause of a slower input (idle between)
            got = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
            records = got.get(tp)
            if not records:
                continue
            record = records[-1]
            outputs = [Output(due, uuid.uuid4().bytes + record.key, value, headers),
                       Output(due, uuid.uuid4().bytes + record.key, value, headers),
                       Output(counts, b"automation", b"1", [])]
            t = time.perf_counter()
            await send_in_transaction(producer, partitions, outputs,
                                      {tp: record.offset + 1}, group)
            walls.append(time.perf_counter() - t)
            done += 1
        if profiler:
            profiler.disable()
        cpu = time.process_time() - cpu0
        user, system = (b - a for a, b in zip(proc0, proc_cpu_s(), strict=True))
        wall = time.perf_counter() - wall0
    finally:
        await consumer.stop()
        await producer.stop()
    if profiler and profile:
        profiler.dump_stats(profile)
    measured = sorted(walls[warmup:])
    p99 = measured[min(len(measured) - 1, int(len(measured) * 0.99))]
    print(f"txn_cpu_ms={cpu / transactions * 1000:.3f} "
          f"txn_proc_cpu_ms={(user + system) / transactions * 1000:.3f} "
          f"(user {user / transactions * 1000:.3f} sys {system / transactions * 1000:.3f}) "
          f"commit_p50_ms={statistics.median(measured) * 1000:.2f} "
          f"commit_p99_ms={p99 * 1000:.2f} "
          f"txn_per_s={transactions / wall:.0f} transactions={transactions}", flush=True)
    if REQUESTS:
        print("requests_per_txn: " + " ".join(
            f"{name}={n / transactions:.2f}" for name, n in sorted(REQUESTS.items())), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transactions", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--profile", default=None, help="write a cProfile (pstats) here")
    p.add_argument("--interval-ms", type=float, default=0.0,
                   help="sleep this long before each transaction (default: back to back)")
    p.add_argument("--requests", action="store_true",
                   help="also print the Kafka requests per transaction, by type")
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args()
    # aiokafka warns on each retried produce (a NotEnoughReplicas now and then, right after
    # the previous commit); `--requests` counts them instead.
    logging.basicConfig(level=logging.ERROR)
    if args.requests:
        count_requests()
    if not args.no_uvloop:
        import uvloop
        uvloop.install()
    with named_or_scratch_broker() as bootstrap:
        asyncio.run(run(bootstrap, args.transactions, args.warmup, args.profile,
                        args.interval_ms / 1000))


if __name__ == "__main__":
    main()
