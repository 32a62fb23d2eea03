"""Timestamps as every service handles them: aware UTC datetimes, or milliseconds on the wire."""

from __future__ import annotations

from datetime import UTC, datetime


def aware_utc(value: datetime | int) -> datetime:
    """An aware UTC datetime from Avro's timestamp-millis (an int) or a datetime without a
    zone (SQLite keeps none; naive means UTC everywhere in hookstream)."""
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def now_ms() -> int:
    """Milliseconds since the epoch, as Kafka timestamps and our `*-at` headers carry them."""
    return int(datetime.now(UTC).timestamp() * 1000)
