"""A three-node SASL_SSL (SCRAM) Kafka cluster for tests, from the local launcher.

`kafka_cluster_sasl` (registered in tests/conftest.py) starts it once per session in a
temporary directory and stops every node by pid at the end. Tests that kill or pause a node
must bring it back (`restart_node`, `resume_node`) before they return: others share it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

from hookstream.local.kafka import LocalKafkaCluster, scratch_cluster


def sasl_cluster(data_dir: Path) -> Iterator[LocalKafkaCluster]:
    """Start the cluster in `data_dir`, yield it, stop it (a generator for a fixture)."""
    t0 = time.monotonic()
    # Tests push little traffic: the brokers skip the optimising JIT and start in half the
    # CPU time, which on two shared cores is most of the start-up.
    with scratch_cluster(data_dir, brokers=3, security="sasl_ssl", quick_jvm=True) as cluster:
        # Shown with -s / in the log of a failing run: the cost every session pays.
        print(f"\n3-node SASL_SSL cluster started in {time.monotonic() - t0:.1f}s")
        yield cluster


async def isr_sizes(cluster: LocalKafkaCluster, topic: str) -> list[int]:
    """The size of each partition's ISR of `topic`, as the cluster's metadata says."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**cluster.admin.aiokafka_kwargs())
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        return [len(p["isr"]) for p in sorted(described["partitions"],
                                               key=lambda p: p["partition"])]
    finally:
        await admin.close()


async def wait_isr(cluster: LocalKafkaCluster, topic: str, size: int,
                   timeout: float = 60.0) -> list[int]:
    """Until every partition of `topic` has an ISR of `size`; returns the sizes last seen."""
    deadline = time.monotonic() + timeout
    sizes = await isr_sizes(cluster, topic)
    while any(s != size for s in sizes) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        sizes = await isr_sizes(cluster, topic)
    return sizes
