"""Issue 13 item 4: workers scale from one to three under load.

A steady stream of raw webhooks; worker 1 alone, then worker 2 and worker 3 join while the
records flow. The consumer group rebalances the raw topic's partitions over the three, and
the transactional loop (one producer per partition, fenced by its successor) keeps the output
exactly once: every record becomes exactly one invitation on the due topic.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time

import pytest

from automations.ids import invitation_id
from core.kafka.topics import Topics, ensure_topics
from tests.streams.conftest import (
    make_snapshot,
    produce_raw,
    publish_snapshot,
    read_topic,
    webhook,
)
from tests.support.groups import group_assignment

# `make fleet`, not `make test`: three worker processes take 60-80 s on a busy machine.
pytestmark = [pytest.mark.kafka, pytest.mark.fleet, pytest.mark.timeout(180)]

PARTITIONS = 6
PER_HOOK = 5  # records per webhook
HOOKS_PER_TICK = 10  # every TICK seconds: 50 records, 250 a second
TICK = 0.2


async def test_workers_scale_from_one_to_three_under_load(
        kafka_bootstrap: str, topics: Topics, worker_factory) -> None:
    started = time.monotonic()
    await ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    await publish_snapshot(kafka_bootstrap, topics, make_snapshot("auto-scale"))
    workers = [worker_factory(HOOKSTREAM_TOPIC_PARTITIONS=str(PARTITIONS)) for _ in range(3)]
    workers[0].start()
    await workers[0].wait_ready()

    sent: list[str] = []  # event ids, in the order produced
    stop_feeding = asyncio.Event()

    async def feed() -> None:
        n = 0
        while not stop_feeding.is_set():
            hooks = []
            for _ in range(HOOKS_PER_TICK):
                event = f"ev-{n}"
                hooks.append(webhook("auto-scale", [
                    {"email": f"r{n}-{j}@example.com", "name": f"R {n}", "age": j}
                    for j in range(PER_HOOK)], event))
                sent.append(event)
                n += 1
            await produce_raw(kafka_bootstrap, topics, hooks)
            await asyncio.sleep(TICK)

    feeder = asyncio.create_task(feed())
    try:
        await asyncio.sleep(2.0)  # worker 1 alone under load first
        for n, w in enumerate(workers[1:], 2):
            w.start()  # joins the group while records flow: a rebalance mid-stream
            await w.wait_ready()
            print(f"worker {n} ready after {time.monotonic() - started:.1f} s, "
                  f"{len(sent) * PER_HOOK} records produced")
        # All three in the group: every one owns raw partitions, together all of them.
        group = f"{topics.prefix}hookstream-streams.raw"
        state, owned = "", []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state, owned = await group_assignment(kafka_bootstrap, group, topics.raw)
            if state == "Stable" and len(owned) == 3 and all(owned):
                break
            await asyncio.sleep(0.2)
        assert state == "Stable" and len(owned) == 3 and all(owned), \
            f"not three members each with raw partitions: {state} {owned}"
        assert sorted(p for o in owned for p in o) == list(range(PARTITIONS)), owned
        print(f"three workers own {[sorted(o) for o in owned]} after "
              f"{time.monotonic() - started:.1f} s")
        await asyncio.sleep(2.0)  # and the three together under load
    finally:
        stop_feeding.set()
        await feeder
    total = len(sent) * PER_HOOK

    records = await read_topic(kafka_bootstrap, topics.due,
                               until=lambda rs: len({r.key for r in rs}) >= total,
                               timeout=60, settle=2.0)
    for w in workers:  # all at once (each commits and leaves its group): a quicker end
        if w.proc is not None and w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    keys = collections.Counter(r.key.decode() for r in records)
    duplicates = {k: n for k, n in keys.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} invitations twice"
    assert set(keys) == {invitation_id("auto-scale", e, j) for e in sent
                         for j in range(PER_HOOK)}
    assert len(records) == total
    print(f"scale-out: {total} records, partitions owned {[sorted(o) for o in owned]}, "
          f"{time.monotonic() - started:.1f} s")
