"""The batch ingest's peer in `bench/ingress.py`: a bare confluent-kafka loop (acks=all,
idempotent, linger 5 ms) sending the same record as the ingress's batch request, as fast as
it can (the Python client's limit; copied from the peer harness of issue 17).

    python bench/ingress_peer_loop.py TOPIC VALUE_FILE SECONDS [KEY]   (from the root)
    -> records=… seconds=… rps=…

The broker and its client settings come from HOOKSTREAM_KAFKA_* (the producer is built by
core/kafka/clients.py, as every client of the project is).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.kafka.clients import KafkaConnection, rdkafka_producer  # noqa: E402
from core.settings import get_settings  # noqa: E402


def main() -> None:
    topic, vfile, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    key = sys.argv[4].encode() if len(sys.argv) > 4 else None
    with open(vfile, "rb") as f:
        value = f.read()
    done = 0

    def delivered(err: Any, _msg: Any) -> None:
        nonlocal done
        if err is None:
            done += 1

    p = rdkafka_producer(KafkaConnection.from_settings(get_settings()),
                         {"acks": "all", "enable.idempotence": True, "linger.ms": 5})
    headers = [("content-type", b"application/json")]
    t0 = time.monotonic()
    end = t0 + secs
    n = 0
    while True:
        if n % 256 == 0:
            p.poll(0)
            if time.monotonic() >= end:
                break
        try:
            p.produce(topic, value, key, headers=headers, on_delivery=delivered)
            n += 1
        except BufferError:
            p.poll(0.001)
    p.flush(60)
    elapsed = time.monotonic() - t0
    print(f"records={done} seconds={elapsed:.2f} rps={done / elapsed:.1f}")


if __name__ == "__main__":
    main()
