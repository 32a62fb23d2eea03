"""`make chaos`: the fault-injection suite, one round per fault, on one fleet (see
tests/chaos/fleet.py and rounds.py). Not collected by `make test` (the file name does not
start with test_): it runs for about a quarter of an hour.

Each round: RATE new respondents a second for SECONDS, the fault FAULT_AT seconds in, then
the drain; one line per round at the end of the run (`fault=… accepted=… …`). Nothing
accepted may be lost; duplicates only in the documented windows (see rounds.check).
"""

from __future__ import annotations

import pytest

from tests.chaos.fleet import Fleet
from tests.chaos.rounds import FAULTS, check, round_tag, run_round

RATE = 10
SECONDS = 30
FAULT_AT = 6.0


@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_round(fleet: Fleet, fault: str, chaos_lines: list[str]) -> None:
    result = run_round(fleet, FAULTS[fault], round_tag(fault), rate=RATE, seconds=SECONDS,
                       fault_at=FAULT_AT)
    chaos_lines.append(result.line())
    print(f"\n{result.line()}\n{' · '.join(result.events)}\nerrors={result.errors}")
    check(result)
