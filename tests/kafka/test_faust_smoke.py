"""Smoke test on the real broker: a Faust worker turns N JSON records into N Avro events."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.kafka.topics import Topics
from schemas import codec

N = 200
REPO = Path(__file__).resolve().parents[2]


async def test_faust_app_json_to_avro(kafka_bootstrap: str, topics: Topics, tmp_path) -> None:
    source, sink = f"{topics.prefix}smoke.in", f"{topics.prefix}smoke.out"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(N):
            body = {"event_id": f"e{i}", "email": f"r{i}@example.com", "n": i}
            await producer.send(source, orjson.dumps(body))
        await producer.flush()
    finally:
        await producer.stop()

    # The worker runs in tmp_path (Faust writes its data directory there): the repository
    # must be on its path for `tests.support` to import.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "HOOKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap, "PYTHONPATH": path}
    worker = subprocess.Popen([sys.executable, "-m", "tests.support.faust_smoke", source, sink],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    consumer = AIOKafkaConsumer(sink, bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        got: dict[str, dict] = {}
        async with asyncio.timeout(90):
            while len(got) < N:
                assert worker.poll() is None, worker.stdout.read().decode()  # type: ignore[union-attr]
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        inv = codec.decode_as("InvitationRequested", r.value)
                        assert r.key == inv["invitation_id"].encode()
                        got[inv["event_id"]] = inv
    finally:
        await consumer.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    assert sorted(got) == sorted(f"e{i}" for i in range(N))
    assert all(got[f"e{i}"]["variables"] == {"n": i} for i in range(N))
    assert all(got[f"e{i}"]["email"] == f"r{i}@example.com" for i in range(N))
