"""`hookstream tap`: a topic's records as JSON lines, or as an Avro Object Container File.

JSON lines carry the record's coordinates, key, timestamp, headers and the decoded value.
The Avro file holds the decoded values under the topic's schema (`schemas/*.avsc`), so
fastavro, Spark or any Avro reader opens it without hookstream code.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import fastavro
import fastavro.write

from core.kafka.clients import Kafka
from ops.reading import AVRO_TOPICS, RAW_TOPICS, ReadError, open_reader, read_records
from schemas import codec

log = logging.getLogger(__name__)


@dataclass
class TapResult:
    written: int = 0
    skipped: int = 0  # tombstones or undecodable records left out of an Avro file


def _json_default(obj: object) -> Any:
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _text_or_b64(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def body_value(data: bytes) -> tuple[str, str]:
    """(value, encoding) of a raw body: the text when it is UTF-8 JSON (or NDJSON), else base64."""
    text, encoding = _text_or_b64(data)
    if encoding == "base64":
        return text, encoding
    lines = [ln for ln in text.splitlines() if ln.strip()] or [text]
    try:
        for line in lines:
            json.loads(line)
    except ValueError:
        return base64.b64encode(data).decode(), "base64"
    return text, "text"


def record_to_json(record: Any, short: str | None) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for k, v in record.headers or ():
        headers[k] = _text_or_b64(v)[0] if v is not None else ""
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(
            timespec="milliseconds"),
        "key": None if record.key is None else _text_or_b64(record.key)[0],
        "headers": headers,
    }
    value: bytes | None = record.value
    if value is None:
        out["value"] = None  # tombstone (a deleted automation on automations.config)
    elif short in RAW_TOPICS:
        out["value"], out["encoding"] = body_value(value)
    else:
        try:
            out["schema"], out["value"] = codec.decode(value)
        except codec.CodecError as exc:
            # Shown, not dropped: the reader sees the bytes and why they did not decode.
            out["error"] = str(exc)
            out["value"], out["encoding"] = base64.b64encode(value).decode(), "base64"
    return out


class JsonLinesSink:
    def __init__(self, out: IO[str], short: str | None) -> None:
        self.out, self.short = out, short

    def write(self, record: Any) -> bool:
        self.out.write(json.dumps(record_to_json(record, self.short), default=_json_default,
                                  ensure_ascii=False) + "\n")
        self.out.flush()
        return True

    def close(self) -> None:
        self.out.flush()


class AvroFileSink:
    """Decoded records appended to an Avro Object Container File as they come."""

    def __init__(self, path: Path, schema_name: str, topic: str) -> None:
        self.schema_name = schema_name
        self._file = path.open("wb")
        self._writer = fastavro.write.Writer(
            self._file, codec.parsed(schema_name),
            metadata={"hookstream.topic": topic, "hookstream.schema": schema_name})
        self.skipped = 0

    def write(self, record: Any) -> bool:
        if record.value is None:
            self.skipped += 1
            log.warning("offset %s/%s is a tombstone; not in the Avro file",
                        record.partition, record.offset)
            return False
        try:
            value = codec.decode_as(self.schema_name, record.value)
        except codec.CodecError as exc:
            self.skipped += 1
            log.error("partition %s offset %s left out of the Avro file: %s",
                      record.partition, record.offset, exc)
            return False
        self._writer.write(value)
        return True

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._writer.flush()
        finally:
            self._file.close()


def avro_schema_for(topic: str, short: str | None) -> str:
    if short in RAW_TOPICS:
        raise ReadError(f"{topic} holds request bodies as received, not Avro records, so it "
                        "cannot be written to an Avro file; tap it as JSON lines instead")
    if short is None:
        raise ReadError(f"{topic} is not a hookstream topic, so its schema is unknown; "
                        f"Avro topics: {', '.join(AVRO_TOPICS)}")
    return AVRO_TOPICS[short]


async def tap(bootstrap: Kafka, topic: str, short: str | None, start: str | int,
              sink: JsonLinesSink | AvroFileSink, key: str | None = None, follow: bool = False,
              max_records: int | None = None, result: TapResult | None = None) -> TapResult:
    """Feed matching records to `sink` until the end (or forever with `follow`) or `max_records`.

    Counts into `result` as it goes, so a caller interrupted by Ctrl-C still knows them.
    """
    result = result if result is not None else TapResult()
    if max_records is not None and max_records <= 0:
        return result
    wanted_key = key.encode() if key is not None else None
    consumer, tps = await open_reader(bootstrap, topic, start)
    try:
        async for record in read_records(consumer, tps, follow):
            if wanted_key is not None and record.key != wanted_key:
                continue
            if sink.write(record):
                result.written += 1
            else:
                result.skipped += 1
            if max_records is not None and result.written >= max_records:
                break
    finally:
        await consumer.stop()
    return result
