"""Shared fixtures: a real Kafka broker, a three-node SASL_SSL cluster (started only for
the tests that ask for `kafka_cluster_sasl`), a fresh topic prefix per test, and a PostgreSQL
server for the session (`postgres_url`; `postgres_db` is a fresh database on it).

PostgreSQL: `HOOKSTREAM_TEST_POSTGRES_URL` when set; else a local server from Debian's
packages (installed with apt-get if missing) started for the session and stopped by pid.

The broker comes from, in order: `HOOKSTREAM_KAFKA_BOOTSTRAP`; testcontainers' Kafka when a
Docker engine answers; else the local launcher (one broker for the whole session, on free
ports, in a temporary directory, stopped by pid at the end).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.kafka.topics import Topics
from hookstream.local.kafka import LocalKafka, LocalKafkaCluster, free_port, scratch_broker
from tests.support import postgres
from tests.support.cluster import sasl_cluster


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no usable Docker engine": fall back
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address of a real Apache Kafka broker."""
    named = os.environ.get("HOOKSTREAM_KAFKA_BOOTSTRAP")
    if named:
        yield named
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    with scratch_broker(Path(tmp_path_factory.mktemp("kafka"))) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def kafka_cluster_sasl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    """A three-node cluster of our own (RF 3, min ISR 2) with a SASL_SSL SCRAM client
    listener; `.client` has the client settings, `.kill_node`/`.restart_node`/`.pause_node`
    the faults. Started once per session, stopped by pid."""
    yield from sasl_cluster(Path(tmp_path_factory.mktemp("kafka-cluster")))


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of this test's own: it is stopped mid-test (the session's is shared)."""
    kafka = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port(),
                       heap="512m", log_level="WARN")
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, so topics never collide."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def topics(topic_prefix: str) -> Topics:
    return Topics(topic_prefix)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server URL (its database may be used as a maintenance database)."""
    with postgres.server() as url:
        yield url


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy URL), dropped after the test."""
    url, name = postgres.fresh_database(postgres_url)
    try:
        yield url
    finally:
        postgres.drop_database(postgres_url, name)
