"""Benchmark of the idempotency store: keyed requests per second, SQLite against PostgreSQL.

What a keyed (or signed) webhook pays the store, without HTTP or Kafka: `begin` (the claim)
then `complete` (the answer), each a statement on the store's threads, CONCURRENCY requests
at once on one event loop, as in one ingress process. Also the replay (a retried key):
`begin` only. PostgreSQL is the local server from tests/support/postgres.py (or the one
HOOKSTREAM_TEST_POSTGRES_URL names), a fresh database each run.

Each run measures both backends back to back, alternating which goes first; the line gives
medians of RUNS runs, and `ratio` is the median of the runs' own postgres/sqlite ratios:

    idempotency sqlite_keyed_per_s=… postgres_keyed_per_s=… ratio=… sqlite_replay_per_s=… …

Knobs (environment): BENCH_RUNS (5), BENCH_SECONDS (3), BENCH_CONCURRENCY (50).
Run it under `flock /tmp/hookstream-bench.lock` on a shared machine.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingress.idempotency import IdempotencyStore, KeyClaim  # noqa: E402
from tests.support import postgres  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "50"))


async def rate(store: IdempotencyStore, *, replay: bool) -> float:
    """Keyed requests (claim + answer) or replays per second for SECONDS."""
    done = 0
    stop = time.monotonic() + SECONDS
    answered: list[str] = []

    async def one_client(n: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            if replay:
                key = answered[(n + i) % len(answered)]
                outcome = await store.begin("bench", key)
                assert not isinstance(outcome, KeyClaim)
            else:
                key = f"{n}-{i}-{uuid.uuid4().hex}"
                claim = await store.begin("bench", key)
                assert isinstance(claim, KeyClaim)
                await store.complete(claim, 202, b'{"event_id":"x","accepted":1}')
            done += 1
            i += 1

    if replay:
        for i in range(200):
            claim = await store.begin("bench", f"r{i}")
            assert isinstance(claim, KeyClaim)
            await store.complete(claim, 202, b"{}")
            answered.append(f"r{i}")
    started = time.monotonic()
    await asyncio.gather(*[one_client(n) for n in range(CONCURRENCY)])
    return done / (time.monotonic() - started)


async def measure(target: Path | str) -> tuple[float, float]:
    store = IdempotencyStore(target, window_seconds=86400, stale_after=22)
    await asyncio.to_thread(store.open)
    try:
        await rate(store, replay=False)  # warm-up: connections, statement caches
        return await rate(store, replay=False), await rate(store, replay=True)
    finally:
        await asyncio.to_thread(store.close)


def main() -> None:
    results: dict[str, list[float]] = {k: [] for k in ("sk", "pk", "sr", "pr", "ratio")}
    with postgres.server("hookstream-pg-bench-") as server, tempfile.TemporaryDirectory() as tmp:
        for run in range(RUNS):
            url, name = postgres.fresh_database(server)
            try:
                order = ["sqlite", "postgres"] if run % 2 == 0 else ["postgres", "sqlite"]
                got: dict[str, tuple[float, float]] = {}
                for backend in order:
                    target: Path | str = Path(tmp) / f"run{run}.sqlite3" \
                        if backend == "sqlite" else url
                    got[backend] = asyncio.run(measure(target))
            finally:
                postgres.drop_database(server, name)
            (sk, sr), (pk, pr) = got["sqlite"], got["postgres"]
            for k, v in (("sk", sk), ("pk", pk), ("sr", sr), ("pr", pr), ("ratio", pk / sk)):
                results[k].append(v)
            print(f"run {run + 1}: sqlite keyed {sk:.0f}/s replay {sr:.0f}/s; "
                  f"postgres keyed {pk:.0f}/s replay {pr:.0f}/s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"idempotency sqlite_keyed_per_s={med['sk']:.0f} postgres_keyed_per_s={med['pk']:.0f}"
          f" ratio={med['ratio']:.2f} sqlite_replay_per_s={med['sr']:.0f}"
          f" postgres_replay_per_s={med['pr']:.0f} concurrency={CONCURRENCY}")


if __name__ == "__main__":
    main()
