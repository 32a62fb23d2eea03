"""The local Kafka launcher: start, status, idempotent start, port clash, produce/consume, stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from typer.testing import CliRunner

from hookstream.cli import app
from hookstream.local.kafka import (
    KafkaLaunchError,
    LocalKafka,
    free_port,
    kafka_version,
    new_cluster_id,
    pid_alive,
)


def test_cluster_ids_never_look_like_options() -> None:
    # One id in 64 began with '-' and the storage tool took it for an option.
    ids = [new_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)
    assert len(set(ids)) == len(ids)


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


async def _round_trip(bootstrap: str) -> list[bytes]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait("launcher.check", f"m{i}".encode(), key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer("launcher.check", bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id="launcher-check")
    await consumer.start()
    try:
        got: list[bytes] = []
        async with asyncio.timeout(30):
            while len(got) < 5:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [r.value for r in records]
        await consumer.commit()
        return got
    finally:
        await consumer.stop()


def test_start_status_restart_clash_stop(tmp_path: Path) -> None:
    port = free_port()
    runner = CliRunner()
    args = ["--port", str(port), "--data-dir", str(tmp_path / "k")]
    kafka = LocalKafka(tmp_path / "k", port=port, controller_port=port + 1)
    try:
        res = runner.invoke(app, ["kafka", "start", *args])
        assert res.exit_code == 0, res.output
        assert f"Apache Kafka {kafka_version()} ready at 127.0.0.1:{port}" in res.output
        state = kafka.state()
        assert state is not None
        # The JVM runs the broker's main class from the Maven artifacts of the pinned 4.x release.
        cmd = _cmdline(state.pid)
        assert "kafka.Kafka" in cmd
        assert kafka_version().startswith("4.")
        assert f"kafka_2.13-{kafka_version()}.jar" in cmd[cmd.index("-cp") + 1]

        res = runner.invoke(app, ["kafka", "status", *args])
        assert res.exit_code == 0, res.output
        assert f"running: Apache Kafka {kafka_version()} at 127.0.0.1:{port}" in res.output
        assert "answering" in res.output

        # Starting twice is harmless: same process, no second broker.
        res = runner.invoke(app, ["kafka", "start", *args])
        assert res.exit_code == 0, res.output
        assert "already running" in res.output
        assert kafka.state().pid == state.pid  # type: ignore[union-attr]

        # Another broker wanting the same port gets a clear error, not a hang.
        other = LocalKafka(tmp_path / "other", port=port, controller_port=free_port())
        with pytest.raises(KafkaLaunchError, match=f"port {port} on 127.0.0.1 is taken"):
            other.start()

        assert asyncio.run(_round_trip(kafka.bootstrap)) == [f"m{i}".encode() for i in range(5)]

        res = runner.invoke(app, ["kafka", "stop", *args])
        assert res.exit_code == 0 and "stopped" in res.output
        assert not pid_alive(state.pid)
        res = runner.invoke(app, ["kafka", "status", *args])
        assert res.exit_code == 1 and "not running" in res.output
    finally:
        kafka.stop()
