"""The short fault-injection round inside `make test`: the whole fleet (two ingress replicas
behind a balancer, two workers, two notifiers on PostgreSQL, a three-broker cluster, a real
SMTP server) under a short steady load while an ingress replica is SIGKILLed and brought back.
Every respondent answered 202 is mailed; no duplicate outside the documented windows. The
full suite, a round per fault, is `make chaos` (tests/chaos/chaos_full.py)."""

from __future__ import annotations

import pytest

from tests.chaos.fleet import Fleet
from tests.chaos.rounds import FAULTS, check, round_tag, run_round


@pytest.mark.timeout(600)
def test_ingress_replica_killed_under_load(fleet: Fleet, chaos_lines: list[str]) -> None:
    result = run_round(fleet, FAULTS["ingress_kill"], round_tag("ingress_kill"), rate=15,
                       seconds=15, fault_at=4)
    chaos_lines.append(result.line())
    print(f"\n{result.line()}\n{' · '.join(result.events)}\nerrors={result.errors}")
    check(result)
    # The balancer moves clients to the other replica: every request ends answered.
    assert result.gave_up == 0, result.line()
    assert result.accepted == result.sent, result.line()
