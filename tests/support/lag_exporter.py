"""One consumer lag collector with its exporter election, as a process of its own (so a test
can SIGKILL it): serves /metrics on 127.0.0.1:PORT until SIGTERM.

    python -m tests.support.lag_exporter BOOTSTRAP PREFIX ELECTION_GROUP ELECTION_TOPIC PORT
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from prometheus_client import CollectorRegistry

from core.kafka.lag import Election, LagCollector
from core.serving import ProbeServer


async def serve(args: argparse.Namespace) -> None:
    election = Election(args.bootstrap, args.group, args.topic,
                        session_timeout_ms=args.session_ms,
                        heartbeat_interval_ms=args.heartbeat_ms, retry_seconds=1.0)
    collector = LagCollector(args.bootstrap, args.prefix, interval=args.interval,
                             election=election)
    registry = CollectorRegistry()
    registry.register(collector)
    server = ProbeServer("127.0.0.1", args.port, lambda: {"collector": True},
                         name="lag-exporter", registry=registry)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await server.start()
    await collector.start()
    try:
        await stopping.wait()
    finally:
        await collector.stop()  # leaves the election group: another member takes over at once
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("prefix")
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("port", type=int)
    parser.add_argument("--session-ms", type=int, default=6_000)  # the broker's minimum
    parser.add_argument("--heartbeat-ms", type=int, default=1_000)
    parser.add_argument("--interval", type=float, default=1.0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
