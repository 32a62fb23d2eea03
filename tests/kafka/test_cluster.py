"""The launcher's three-node SASL_SSL cluster: it starts, clients with the right settings
write with acks=all and read back, wrong credentials and untrusted certificates are refused,
one node can be killed (acks=all still works on two) and restarted (it rejoins the ISR), and
the CLI's start/status/stop cover every node by pid."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import stat
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context
from typer.testing import CliRunner

from hookstream.cli import app
from hookstream.local.kafka import (
    KafkaClientSettings,
    LocalKafka,
    LocalKafkaCluster,
    is_kafka_process,
    live_brokers,
    pid_alive,
    port_free,
)
from tests.support.cluster import isr_sizes, wait_isr


async def _create_topic(client: KafkaClientSettings, name: str) -> None:
    admin = AIOKafkaAdminClient(**client.aiokafka_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=3,
                                            topic_configs={"min.insync.replicas": "2"})])
    finally:
        await admin.close()


async def _produce(client: KafkaClientSettings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, request_timeout_ms=30000,
                                **client.aiokafka_kwargs())
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=str(i).encode())
    finally:
        await producer.stop()


async def _consume(client: KafkaClientSettings, topic: str, n: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, group_id=f"g-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", **client.aiokafka_kwargs())
    await consumer.start()
    try:
        got: list[bytes] = []
        async with asyncio.timeout(60):
            while len(got) < n:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [r.value for r in records if r.value is not None]
        return got
    finally:
        await consumer.stop()


def _host_port(client: KafkaClientSettings) -> tuple[str, int]:
    host, port = client.bootstrap.split(",")[0].rsplit(":", 1)
    return host, int(port)


async def test_three_sasl_ssl_nodes_replicate_with_acks_all(
        kafka_cluster_sasl: LocalKafkaCluster) -> None:
    cluster = kafka_cluster_sasl
    states = cluster.state()
    assert sorted(states) == [1, 2, 3]
    pids = [st.pid for st in states.values() if st is not None]
    assert len(set(pids)) == 3 and all(pid_alive(p) and is_kafka_process(p) for p in pids)
    ports = [p for np in cluster.ports for p in (np.port, np.controller_port, np.internal_port)]
    assert len(set(ports)) == 9
    assert len({st.data_dir for st in states.values() if st is not None}) == 3

    client = cluster.client
    assert client.security_protocol == "SASL_SSL" and client.sasl_mechanism == "SCRAM-SHA-512"
    assert client.bootstrap == ",".join(f"127.0.0.1:{np.port}" for np in cluster.ports)
    # What `status` prints comes from client.json, readable by the owner only (a password).
    assert json.loads(cluster.client_file.read_text()) == client.__dict__
    assert stat.S_IMODE(cluster.client_file.stat().st_mode) == 0o600
    assert Path(client.ssl_cafile or "").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert await live_brokers(client.bootstrap, 10.0, client) == 3

    topic = f"cluster.rt.{uuid.uuid4().hex[:8]}"
    await _create_topic(client, topic)
    assert await isr_sizes(cluster, topic) == [3, 3, 3]
    values = [f"m{i}".encode() for i in range(20)]
    await _produce(client, topic, values)
    assert sorted(await _consume(client, topic, 20)) == sorted(values)


async def test_wrong_password_and_untrusted_certificate_are_refused(
        kafka_cluster_sasl: LocalKafkaCluster) -> None:
    client = kafka_cluster_sasl.client
    host, port = _host_port(client)
    ca_context = create_ssl_context(cafile=client.ssl_cafile)

    # The right settings connect, with either SCRAM mechanism the launcher enabled.
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        conn = await create_conn(host, port, security_protocol="SASL_SSL", ssl_context=ca_context,
                                 sasl_mechanism=mechanism, sasl_plain_username=client.sasl_username,
                                 sasl_plain_password=client.sasl_password)
        conn.close()

    with pytest.raises(SaslAuthenticationFailed, match="Authentication failed"):
        await create_conn(host, port, security_protocol="SASL_SSL", ssl_context=ca_context,
                          sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=client.sasl_username,
                          sasl_plain_password="not-the-password")
    # A producer with the wrong password does not start (it cannot bootstrap).
    wrong = KafkaClientSettings(**{**client.__dict__, "sasl_password": "not-the-password"})
    producer = AIOKafkaProducer(**wrong.aiokafka_kwargs())
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()

    # The system's CAs do not know the launcher's CA: the TLS handshake fails.
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await create_conn(host, port, security_protocol="SASL_SSL",
                          ssl_context=create_ssl_context(),
                          sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=client.sasl_username,
                          sasl_plain_password=client.sasl_password)
    # Plaintext clients get no answer from the SASL_SSL port.
    assert await live_brokers(client.bootstrap, 3.0) == 0


async def test_one_node_killed_acks_all_still_works_then_it_rejoins(
        kafka_cluster_sasl: LocalKafkaCluster) -> None:
    cluster = kafka_cluster_sasl
    client = cluster.client
    topic = f"cluster.kill.{uuid.uuid4().hex[:8]}"
    await _create_topic(client, topic)
    await _produce(client, topic, [b"before"])
    victim = 2
    killed = cluster.kill_node(victim)
    try:
        assert not pid_alive(killed) and cluster.state()[victim] is None
        # Two of three replicas in sync satisfy min.insync.replicas=2.
        values = [f"during{i}".encode() for i in range(10)]
        await asyncio.wait_for(_produce(client, topic, values), 60)
        assert await wait_isr(cluster, topic, 2, timeout=30) == [2, 2, 2]
    finally:
        restarted = await asyncio.to_thread(cluster.restart_node, victim)
    assert restarted.pid != killed and restarted.port == cluster.ports[victim - 1].port
    assert await wait_isr(cluster, topic, 3, timeout=60) == [3, 3, 3]
    got = await _consume(client, topic, 11)
    assert sorted(got) == sorted([b"before", *values])


async def test_pause_and_resume_a_node(kafka_cluster_sasl: LocalKafkaCluster) -> None:
    cluster = kafka_cluster_sasl
    pid = cluster.pause_node(3)
    try:
        assert Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "T"
    finally:
        assert cluster.resume_node(3) == pid
    assert Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "T"
    assert await live_brokers(cluster.bootstrap, 10.0, cluster.admin) == 3


def _free_base(n: int) -> int:
    for _ in range(200):
        base = random.randrange(20000, 60000)
        if all(port_free(base + i) for i in range(n)):
            return base
    raise AssertionError("no run of free ports")


def test_cli_starts_reports_and_stops_every_node_by_pid(tmp_path: Path) -> None:
    runner = CliRunner()
    base = _free_base(9)
    args = ["--port", str(base), "--data-dir", str(tmp_path / "c")]
    cluster = LocalKafkaCluster(tmp_path / "c")
    try:
        res = runner.invoke(app, ["kafka", "start", "--brokers", "3", "--security", "sasl_ssl",
                                  "--quick-jvm", *args])
        assert res.exit_code == 0, res.output
        assert "3-node sasl_ssl cluster ready" in res.output
        cluster = LocalKafkaCluster(tmp_path / "c")
        assert [np.port for np in cluster.ports] == [base, base + 1, base + 2]
        pids = [st.pid for st in cluster.state().values() if st is not None]
        assert len(pids) == 3
        for node_id, pid in zip((1, 2, 3), pids, strict=True):
            assert f"node {node_id}: Apache Kafka" in res.output and f"(pid {pid})" in res.output

        res = runner.invoke(app, ["kafka", "status", *args])
        assert res.exit_code == 0, res.output
        assert "3 of 3 nodes running, 3 listed" in res.output
        res = runner.invoke(app, ["kafka", "status", "--env", *args])
        assert res.exit_code == 0, res.output
        env = dict(line.split("=", 1) for line in res.output.splitlines())
        assert env == cluster.client.env()
        assert env["HOOKSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert set(env) == {"HOOKSTREAM_KAFKA_BOOTSTRAP", "HOOKSTREAM_KAFKA_SECURITY_PROTOCOL",
                            "HOOKSTREAM_KAFKA_SASL_MECHANISM", "HOOKSTREAM_KAFKA_SASL_USERNAME",
                            "HOOKSTREAM_KAFKA_SASL_PASSWORD", "HOOKSTREAM_KAFKA_SSL_CAFILE"}

        # A node down: status says which and exits 2.
        cluster.kill_node(2)
        res = runner.invoke(app, ["kafka", "status", *args])
        assert res.exit_code == 2 and "node 2: down" in res.output, res.output

        res = runner.invoke(app, ["kafka", "stop", *args])
        assert res.exit_code == 0 and "stopped" in res.output, res.output
        assert not any(pid_alive(p) for p in pids)
        res = runner.invoke(app, ["kafka", "status", *args])
        assert res.exit_code == 1 and "not running" in res.output
    finally:
        cluster.stop()


def _props(node: LocalKafka) -> dict[str, str]:
    lines = node._write_config().read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def test_node_configs_single_plaintext_cluster_and_sasl_ssl(tmp_path: Path) -> None:
    single = _props(LocalKafka(tmp_path / "one", port=9092, controller_port=9093))
    assert single["node.id"] == "1" and single["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert single["default.replication.factor"] == "1" and single["min.insync.replicas"] == "1"
    assert single["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"

    plain = LocalKafkaCluster(tmp_path / "plain", port=30000)
    node2 = _props(plain.node(2))
    assert node2["node.id"] == "2"
    assert node2["controller.quorum.voters"] == \
        "1@127.0.0.1:30003,2@127.0.0.1:30004,3@127.0.0.1:30005"
    assert node2["listeners"] == "PLAINTEXT://127.0.0.1:30001,CONTROLLER://127.0.0.1:30004"
    for key, value in {"default.replication.factor": "3", "min.insync.replicas": "2",
                       "offsets.topic.replication.factor": "3",
                       "transaction.state.log.replication.factor": "3",
                       "transaction.state.log.min.isr": "2"}.items():
        assert node2[key] == value, key
    assert plain.client == KafkaClientSettings("127.0.0.1:30000,127.0.0.1:30001,127.0.0.1:30002")

    sasl = LocalKafkaCluster(tmp_path / "sasl", port=31000, security="sasl_ssl")
    sasl._prepare()
    node3 = _props(sasl.node(3))
    assert node3["listeners"] == ("CLIENT://127.0.0.1:31002,INTERNAL://127.0.0.1:31008,"
                                  "CONTROLLER://127.0.0.1:31005")
    assert node3["inter.broker.listener.name"] == "INTERNAL"
    assert node3["listener.security.protocol.map"] == \
        "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,CLIENT:SASL_SSL"
    assert Path(node3["listener.name.client.ssl.keystore.location"]).exists()
    assert stat.S_IMODE((tmp_path / "sasl" / "node-3" / "server.properties").stat().st_mode) \
        == 0o600
    # The SCRAM users go into storage at format time, for both mechanisms.
    assert sorted(c.split("=[")[0] + c.split(",")[0].split("[")[1]
                  for c in sasl.node(1).role.scram) == sorted(  # type: ignore[union-attr]
        f"{m}name={u}" for m in ("SCRAM-SHA-256", "SCRAM-SHA-512") for u in ("admin", "hookstream"))
