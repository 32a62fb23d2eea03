"""`hookstream ingress` in several worker processes (HOOKSTREAM_INGRESS_WORKERS, issue 17):
each worker counts its own requests on its own internal /metrics port (their sum is every
request), an Idempotency-Key is honoured whichever worker a retry reaches, and more than one
worker without an internal metrics port is refused at start."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys

import httpx
import orjson

from automations.snapshot import ApiKeyHash
from core.kafka.topics import Topics, ensure_topics
from hookstream.local.kafka import free_port
from tests.ingress.conftest import (
    ROOT,
    ServedIngress,
    make_snapshot,
    new_key,
    publish_snapshots,
    read_raw,
    sha,
)

WORKERS = 2
REQUESTS = 40


def free_port_pair() -> int:
    """A port p with p+1 free too (each worker's /metrics takes the next free one)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue  # taken: another pair
        return port
    raise AssertionError("no two adjacent free ports")


def accepted(text: str, automation: str) -> float:
    m = re.search(rf'^hookstream_webhooks_accepted_total{{automation="{automation}"}} (\S+)$',
                  text, re.M)
    return float(m.group(1)) if m else 0.0


def test_more_workers_need_an_internal_metrics_port() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSTREAM_")}
    env["HOOKSTREAM_INGRESS_WORKERS"] = "2"
    out = subprocess.run([sys.executable, "-m", "hookstream.cli", "ingress", "--port",
                          str(free_port())], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "HOOKSTREAM_INGRESS_METRICS_PORT" in out.stderr


async def test_workers_count_their_own_requests_and_share_idempotency(
        kafka_bootstrap: str, topics: Topics, served: ServedIngress) -> None:
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    metrics_port = free_port_pair()
    served.env.update({"HOOKSTREAM_INGRESS_WORKERS": str(WORKERS),
                       "HOOKSTREAM_INGRESS_METRICS_PORT": str(metrics_port)})
    await asyncio.to_thread(served.start)
    url = f"{served.base_url}/v1/hooks/{snap.id}"
    headers = {"Content-Type": "application/json", "X-API-Key": key}

    async def post(i: int, idem: str | None = None) -> httpx.Response:
        # A client per request: a new connection each, which the kernel hands to either worker.
        async with httpx.AsyncClient(timeout=30) as client:
            h = headers if idem is None else {**headers, "Idempotency-Key": idem}
            return await client.post(url, content=b'{"n": %d}' % i, headers=h)

    answers = await asyncio.gather(*(post(i) for i in range(REQUESTS)))
    assert [r.status_code for r in answers] == [202] * REQUESTS
    # The same key, sent at once over separate connections: one publish, one answer.
    keyed = await asyncio.gather(*(post(REQUESTS, "same-key") for _ in range(10)))
    assert {r.status_code for r in keyed} == {202}
    assert len({r.content for r in keyed}) == 1

    per_worker = []
    async with httpx.AsyncClient(timeout=10) as client:
        for port in range(metrics_port, metrics_port + WORKERS):
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            per_worker.append(accepted(text, snap.id))
        assert (await client.get(f"{served.base_url}/metrics")).status_code == 404
    assert sum(per_worker) == REQUESTS + 1, per_worker

    records = await read_raw(kafka_bootstrap, topics.raw, at_least=REQUESTS + 1)
    assert len(records) == REQUESTS + 1
    event_id = orjson.loads(keyed[0].content)["event_id"]
    assert [r.value for r in records if r.headers["request-id"].decode() == event_id] == \
        [b'{"n": %d}' % REQUESTS]
