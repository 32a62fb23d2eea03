"""The fault-injection suite's fleet (one per module) and its result lines, printed together
at the end of the run (pytest's terminal summary), one per round."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hookstream.local.kafka import LocalKafkaCluster
from tests.chaos.fleet import Fleet, fleet_of

LINES: list[str] = []


@pytest.fixture(scope="module")
def fleet(kafka_cluster_sasl: LocalKafkaCluster) -> Iterator[Fleet]:
    yield from fleet_of(kafka_cluster_sasl, f"chaos{uuid.uuid4().hex[:8]}.")


@pytest.fixture
def chaos_lines() -> list[str]:
    return LINES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if LINES:
        terminalreporter.section("chaos rounds")
        for line in LINES:
            terminalreporter.write_line(line)
