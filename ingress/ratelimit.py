"""Token buckets per automation: `rate` requests per second, bursts up to `burst`.

`RateLimiter` keeps the buckets in this process (one ingress replica: the default).
`SharedRateLimiter` keeps them in PostgreSQL, shared by every replica (issue 13, item 2): a
replica LEASES a few tokens at a time from the automation's shared bucket (one upsert per
lease, on a worker thread) and spends them locally, so a request costs the store nothing
while its replica holds tokens. Accepted requests of one automation, over any interval of
W seconds and all replicas together, are at most `burst + rate * W + replicas * lease`
(tokens leased before the interval and spent in it); from a full bucket (no tokens held
yet), at most `burst + rate * W`. docs/DESIGN.md ("Rate limits across replicas").

Both answer `try_take(key, rate, burst)`: 0.0 when the request may pass, else the seconds
to wait; the shared one answers None when it must first lease (`await acquire(...)`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from core.sql import make_engine
from ingress.tables import RATE_BUCKETS

log = logging.getLogger(__name__)

# A lease never holds more than this much of the automation's rate: at a low rate a replica
# leases one token at a time, so idle replicas do not sit on a large part of the budget.
LEASE_SECONDS = 0.1
# After the store failed, requests use this process's bucket for this long before the next try.
RETRY_STORE_SECONDS = 1.0
STORE_TIMEOUT_SECONDS = 2.0
TABLE = RATE_BUCKETS.name


class Limiter(Protocol):
    def try_take(self, key: str, rate: float, burst: int) -> float | None: ...

    async def acquire(self, key: str, rate: float, burst: int) -> float: ...

    def forget(self, key: str) -> None: ...


class RateLimiter:
    """The buckets of this process; `try_take` takes the automation's rate and burst (its
    own, or the defaults given here)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, list[float]] = {}  # id -> [tokens, last refill]

    def take(self, key: str, now: float | None = None) -> float:
        """`try_take` at the default rate and burst."""
        return self.try_take(key, self.rate, self.burst, now)

    def try_take(self, key: str, rate: float, burst: float, now: float | None = None) -> float:
        """0.0 when a request may pass; otherwise the seconds to wait before retrying."""
        t = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [burst - 1.0, t]
            return 0.0
        tokens = min(burst, bucket[0] + (t - bucket[1]) * rate)
        bucket[1] = t
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / rate

    async def acquire(self, key: str, rate: float, burst: int) -> float:
        return self.try_take(key, rate, burst)

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)


# One statement per lease, atomic under the row's lock. Every SET expression reads the row as
# it was: refill by the store's clock (never backwards: a transaction that started earlier may
# get the lock later), grant whole tokens up to :want, keep the rest. `granted` is stored so
# RETURNING can say what this statement granted.
_LEASE = text(f"""
INSERT INTO {TABLE} AS b (automation_id, tokens, refilled_at, granted)
VALUES (:key, CAST(:burst AS float8) - LEAST(:want, :burst),
        EXTRACT(EPOCH FROM clock_timestamp())::float8, LEAST(:want, :burst))
ON CONFLICT (automation_id) DO UPDATE SET
  granted = LEAST(:want, FLOOR(LEAST(CAST(:burst AS float8), b.tokens
            + GREATEST(0, excluded.refilled_at - b.refilled_at) * :rate))),
  tokens = LEAST(CAST(:burst AS float8), b.tokens
           + GREATEST(0, excluded.refilled_at - b.refilled_at) * :rate)
           - LEAST(:want, FLOOR(LEAST(CAST(:burst AS float8), b.tokens
             + GREATEST(0, excluded.refilled_at - b.refilled_at) * :rate))),
  refilled_at = GREATEST(b.refilled_at, excluded.refilled_at)
RETURNING granted, tokens
""")

@dataclass
class _Held:
    """What this replica holds of one automation's shared bucket."""

    tokens: int = 0
    denied_until: float = 0.0  # monotonic: the store said empty until then
    pending: asyncio.Future[None] | None = None  # the lease in flight


class SharedRateLimiter:
    """Buckets in PostgreSQL shared by the ingress replicas (see the module's docstring).

    When the store cannot be reached, each replica falls back to its own bucket (N replicas
    then allow up to N times the rate) and says so in the log; it tries the store again
    after `RETRY_STORE_SECONDS`. Availability of the webhook wins over the exact limit."""

    def __init__(self, url: str, *, lease: int, fallback: RateLimiter) -> None:
        if make_url(url).get_backend_name() != "postgresql":
            raise ValueError("HOOKSTREAM_INGRESS_RATE_STORE_URL must be a PostgreSQL URL")
        self.url = url
        self.lease = lease
        self.fallback = fallback
        self._held: dict[str, _Held] = {}
        self._engine: Engine | None = None
        self._table_ready = False
        self._setup = threading.Lock()  # the two worker threads set the engine up once
        self._store_down_until = 0.0
        self._warned_at = -math.inf
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingress-ratelimit")
        self.leases = 0  # round trips to the store that answered (a test reads them)
        self.granting_leases = 0  # those that granted tokens

    def open(self) -> None:
        """Blocking: connect and bring the table up to date before the first request, so no
        request waits for the migration. A store that cannot be reached yet is set up on the
        first lease instead (meanwhile the fallback answers)."""
        try:
            self._engine_ready()
        except Exception as exc:  # noqa: BLE001 - availability first: leases retry the set-up
            log.error("the rate-limit store cannot be reached at start (%s); the first "
                      "lease sets it up", type(exc).__name__)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def want(self, rate: float) -> int:
        """Tokens asked for per lease: at most `lease`, at most LEASE_SECONDS of the rate."""
        return max(1, min(self.lease, int(rate * LEASE_SECONDS)))

    # --- the hot path ----------------------------------------------------------------------

    def try_take(self, key: str, rate: float, burst: int) -> float | None:
        held = self._held.get(key)
        if held is not None and held.tokens > 0:
            held.tokens -= 1
            return 0.0
        now = time.monotonic()
        if now < self._store_down_until:
            return self.fallback.try_take(key, rate, burst, now)
        if held is not None and now < held.denied_until:
            return held.denied_until - now
        return None

    async def acquire(self, key: str, rate: float, burst: int) -> float:
        """After `try_take` said None: lease (one lease in flight per automation, shared by
        the requests that wait for it), then take."""
        while True:
            wait = self.try_take(key, rate, burst)
            if wait is not None:
                return wait
            held = self._held.setdefault(key, _Held())  # anew: `forget` may have dropped it
            if held.pending is None:
                held.pending = asyncio.ensure_future(self._lease(key, held, rate, burst))
            # Shielded: a request that goes away must not cancel the lease others wait for.
            await asyncio.shield(held.pending)

    def forget(self, key: str) -> None:
        self._held.pop(key, None)  # its unspent tokens are simply not used
        self.fallback.forget(key)

    # --- leases ----------------------------------------------------------------------------

    async def _lease(self, key: str, held: _Held, rate: float, burst: int) -> None:
        loop = asyncio.get_running_loop()
        want = self.want(rate)
        try:
            async with asyncio.timeout(STORE_TIMEOUT_SECONDS + 1.0):
                granted, tokens = await loop.run_in_executor(
                    self._pool, self._lease_sync, key, want, rate, burst)
        except Exception as exc:  # noqa: BLE001 - any store failure: this replica's own bucket
            self._store_down_until = time.monotonic() + RETRY_STORE_SECONDS
            now = time.monotonic()
            if now - self._warned_at > 30.0:
                self._warned_at = now
                log.error("the rate-limit store cannot be reached (%s); each ingress replica "
                          "limits on its own until it can", type(exc).__name__)
            return
        finally:
            held.pending = None
        self.leases += 1
        self.granting_leases += granted > 0
        held.tokens += granted
        if granted == 0:
            # Empty: this replica asks again once a whole lease has refilled, so an
            # automation over its limit costs the store at most rate/lease UPDATEs a second
            # per replica (the tokens are not lost meanwhile: they stay in the bucket).
            want = min(want, burst)
            held.denied_until = time.monotonic() + max(0.0, want - tokens) / rate

    def _lease_sync(self, key: str, want: int, rate: float, burst: int) -> tuple[int, float]:
        engine = self._engine_ready()
        with engine.begin() as conn:
            row = conn.execute(_LEASE, {"key": key, "want": want, "rate": float(rate),
                                        "burst": int(burst)}).one()
        return int(row.granted), float(row.tokens)

    def _engine_ready(self) -> Engine:
        with self._setup:
            return self._set_up()

    def _set_up(self) -> Engine:
        if self._engine is None:
            timeout_ms = int(STORE_TIMEOUT_SECONDS * 1000)
            self._engine = make_engine(self.url, pool_size=2, max_overflow=0, connect_args={
                "connect_timeout": max(1, int(STORE_TIMEOUT_SECONDS)),
                "options": f"-c statement_timeout={timeout_ms} "
                           f"-c lock_timeout={timeout_ms}"})
        if not self._table_ready:
            from ingress.migrations import migrate  # Alembic only where PostgreSQL is used
            migrate(self.url)  # the ingress's history: under core.sql's advisory lock
            self._table_ready = True
        return self._engine


def retry_after_header(seconds: float) -> bytes:
    """Retry-After takes whole seconds; round up so a client never retries too early."""
    return str(max(1, math.ceil(seconds))).encode()
