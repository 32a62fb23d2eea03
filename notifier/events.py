"""The events the notifier emits: `InvitationOutcome` and `AutomationError` (Avro)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from automations.error_events import automation_error
from core.kafka.headers import dead_letter_headers
from core.times import now_ms
from schemas import codec

log = logging.getLogger(__name__)


def outcome(req: dict[str, Any], status: str, *, attempts: int, reason: str | None = None,
            smtp_code: int | None = None, message_id: str | None = None) -> dict[str, Any]:
    return {"invitation_id": req["invitation_id"], "automation_id": req["automation_id"],
            "survey_id": req["survey_id"], "status": status, "reason": reason,
            "smtp_code": smtp_code, "attempts": attempts, "message_id": message_id,
            "at": datetime.now(UTC)}


def invitation_error(req: dict[str, Any], kind: str, detail: str) -> dict[str, Any]:
    """The AutomationError of invitation `req`; its id derives from (invitation, kind), so a
    re-emitted error is recorded once."""
    return automation_error(identity=(req["invitation_id"], kind),
                            automation_id=req["automation_id"], kind=kind, detail=detail,
                            source="notifier", at_ms=now_ms(), event_id=req["event_id"],
                            record_index=req["record_index"],
                            invitation_id=req["invitation_id"])


async def publish(producer: AIOKafkaProducer, topic: str, key: str, schema: str,
                  record: dict[str, Any]) -> None:
    """Write and wait for the broker's acknowledgement (acks=all)."""
    await producer.send_and_wait(topic, codec.encode(schema, record), key=key.encode())


async def dead_letter(producer: AIOKafkaProducer, dlq_topic: str, rec: Any, reason: str,
                      detail: str) -> None:
    """Set a consumed record that cannot be read aside on the dead-letter topic, as it came,
    with why and from which topic (a replay onto webhooks.raw leaves it alone)."""
    headers = dead_letter_headers(rec.headers, reason=reason, detail=detail, source="notifier",
                                  at_ms=now_ms(), topic=rec.topic)
    await producer.send_and_wait(dlq_topic, rec.value, key=rec.key, headers=headers)


async def set_aside(producer: AIOKafkaProducer, dlq_topic: str, rec: Any, detail: str,
                    pause: Callable[[int], float]) -> None:
    """An undecodable record to the dead-letter topic, retried (after `pause(attempt)`
    seconds) until the broker has it: never skipped, its offset waits for this."""
    attempt = 0
    while True:
        try:
            await dead_letter(producer, dlq_topic, rec, "undecodable", detail)
            return
        except Exception as exc:  # noqa: BLE001 - Kafka trouble: logged, retried
            attempt += 1
            log.error("setting aside %s offset %d failed (%s); retrying", rec.topic,
                      rec.offset, type(exc).__name__)
            await asyncio.sleep(pause(attempt))
