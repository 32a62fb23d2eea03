"""How many client connections one ingress process serves at once
(HOOKSTREAM_INGRESS_MAX_CONNECTIONS).

granian keeps a slot per open connection, idle keep-alive ones included, and accepts no new
connection while every slot is taken. Its own default (1,024) let a broker failover at 100
webhooks/s strand new connections: the requests held open while the partition had no leader
left that many connections behind, idle in the clients' pools, and a new integrator's
connection waited in the accept queue until one of them closed (tests/e2e/
test_cluster_pipeline.py saw 30 s client timeouts). These tests hold connections open
against the real `hookstream ingress` process."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys

import httpx

from automations.snapshot import ApiKeyHash
from core.kafka.topics import Topics, ensure_topics
from tests.ingress.conftest import (
    ROOT,
    ServedIngress,
    make_snapshot,
    new_key,
    publish_snapshots,
    sha,
)

HELD = 1_100  # more than granian's default of 1,024


def _room_for(sockets: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = sockets + 512
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


async def _hold(port: int, n: int) -> list[asyncio.StreamWriter]:
    """n idle connections to the ingress (accepted or queued: connect() returns either way)."""
    writers = []
    for _ in range(n):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
    return writers


async def _close(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


async def _webhook(served: ServedIngress, kafka_bootstrap: str,
                   topics: Topics) -> tuple[str, dict[str, str]]:
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    return (f"{served.base_url}/v1/hooks/{snap.id}",
            {"Content-Type": "application/json", "X-API-Key": key})


async def _post(url: str, headers: dict[str, str], timeout: float) -> int:
    async with httpx.AsyncClient(timeout=timeout) as client:  # a new connection
        r = await client.post(url, content=b'{"email": "a@example.com"}', headers=headers)
        return r.status_code


async def test_more_idle_connections_than_granians_default_leave_room_for_a_new_one(
        kafka_bootstrap: str, topics: Topics, served: ServedIngress) -> None:
    _room_for(HELD)
    await asyncio.to_thread(served.start)
    url, headers = await _webhook(served, kafka_bootstrap, topics)
    held = await _hold(served.port, HELD)
    try:
        assert await _post(url, headers, timeout=10) == 202
    finally:
        await _close(held)


async def test_the_setting_caps_open_connections(
        kafka_bootstrap: str, topics: Topics, served: ServedIngress) -> None:
    cap = 64
    served.env["HOOKSTREAM_INGRESS_MAX_CONNECTIONS"] = str(cap)
    await asyncio.to_thread(served.start)
    url, headers = await _webhook(served, kafka_bootstrap, topics)
    # Nothing else is connected now (the readiness probe's connection is closed).
    held = await _hold(served.port, cap)
    try:
        waiting = asyncio.create_task(_post(url, headers, timeout=30))
        done, _ = await asyncio.wait({waiting}, timeout=2.0)
        assert not done, "a connection past the cap was served"
        # Slots free: the queued connections are taken in (a few, in case a probe's closed
        # connection still held one and a held connection queued ahead of the request).
        await _close(held[:4])
        assert await asyncio.wait_for(waiting, 15) == 202
    finally:
        await _close(held[4:])


def test_the_open_files_limit_is_raised_or_the_cap_lowered() -> None:
    """Run in a child whose hard limit is low: the soft limit rises to it, and the cap
    becomes what fits, with a warning that names the setting."""
    code = (
        "import logging, resource\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (300, 800))\n"
        "from ingress.cli import RESERVED_FILES, fit_open_files\n"
        "assert fit_open_files(400) == 400, 'fits under the hard limit'\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 400 + RESERVED_FILES\n"
        "print('cap', fit_open_files(16384))\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 800\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cap 544"  # 800 - 256 reserved
    assert "HOOKSTREAM_INGRESS_MAX_CONNECTIONS" in out.stderr
