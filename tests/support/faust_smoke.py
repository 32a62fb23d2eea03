"""The smallest Faust pipeline: JSON in, Avro `InvitationRequested` out.

It proves the toolchain end to end on a real broker (faust-streaming + aiokafka + the Avro
codec) and doubles as an example of a Faust agent. Run it with
`python -m tests.support.faust_smoke SOURCE SINK` (HOOKSTREAM_KAFKA_BOOTSTRAP names the broker).
"""

from __future__ import annotations

import sys
import time

import faust
import orjson

from automations.ids import invitation_id
from core.settings import get_settings
from schemas import codec


def to_invitation(value: dict) -> dict:
    now = int(time.time() * 1000)
    return {
        "invitation_id": invitation_id("smoke", value["event_id"], 0),
        "automation_id": "smoke", "automation_version": 1, "survey_id": "smoke",
        "event_id": value["event_id"], "record_index": 0, "email": value["email"],
        "variables": {"n": value["n"]}, "received_at": now, "due_at": now, "delay_days": 0,
    }


def make_app(bootstrap: str, source: str, sink: str) -> faust.App:
    app = faust.App(f"hookstream-smoke-{source}", broker=f"aiokafka://{bootstrap}",
                    store="memory://", web_enabled=False, topic_partitions=1,
                    producer_acks=-1, value_serializer="raw", key_serializer="raw")
    source_topic = app.topic(source, value_serializer="raw")
    sink_topic = app.topic(sink, value_serializer="raw", key_serializer="raw")

    @app.agent(source_topic)
    async def convert(stream: faust.Stream[bytes]) -> None:
        async for raw in stream:
            invitation = to_invitation(orjson.loads(raw))
            await sink_topic.send(key=invitation["invitation_id"].encode(),
                                  value=codec.encode("InvitationRequested", invitation))

    return app


if __name__ == "__main__":
    source, sink = sys.argv[1], sys.argv[2]
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    make_app(get_settings().kafka_bootstrap, source, sink).main()
