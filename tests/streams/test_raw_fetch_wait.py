"""The raw loop's fetch wait is short, the other loops' stays long (issue 17).

aiokafka sends a broker no second fetch while one is in flight. After a slow transaction, the
busy raw partition can be left out of a fetch of idle partitions only, which the broker holds
up to `fetch_max_wait_ms`; the busy partition's next records wait with it. In
`make bench-notifier` that showed as raw_wait's slowest batch in the 0.5-1 s bucket with
500 ms, and under 0.3 s with 100 ms (bench/README.md). These tests keep the setting wired.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.kafka.clients import IDLE_FETCH_WAIT_MS
from core.settings import Settings
from streams.raw_loop import RAW_FETCH_MAX_WAIT_MS
from streams.txloop import LoopConfig


def test_the_raw_loop_waits_less_on_idle_partitions_than_the_idle_consumers(
        offline_raw: Callable[..., Any]) -> None:
    assert Settings().worker_raw_fetch_wait_ms == RAW_FETCH_MAX_WAIT_MS == 100
    assert RAW_FETCH_MAX_WAIT_MS < IDLE_FETCH_WAIT_MS
    assert offline_raw().loop.cfg.fetch_max_wait_ms == RAW_FETCH_MAX_WAIT_MS
    assert LoopConfig("scheduler", "b", "g", "t").fetch_max_wait_ms == IDLE_FETCH_WAIT_MS


def test_the_setting_reaches_the_raw_loop(monkeypatch, offline_raw) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOOKSTREAM_WORKER_RAW_FETCH_WAIT_MS", "250")
    wait = Settings().worker_raw_fetch_wait_ms
    assert wait == 250
    assert offline_raw(fetch_max_wait_ms=wait).loop.cfg.fetch_max_wait_ms == 250
