"""A bootstrap list where nothing listens, and the one line a service logs about it."""

from __future__ import annotations

import logging
import socket

import pytest


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unreachable_bootstrap() -> str:
    return f"127.0.0.1:{closed_port()},127.0.0.1:{closed_port()}"


def kafka_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What was logged at WARNING or above about connecting to Kafka."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "Kafka" in r.getMessage()]
