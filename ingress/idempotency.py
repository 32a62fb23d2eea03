"""A durable memory of answered `Idempotency-Key`s, shared by every ingress replica that uses it.

Keyed by (automation, key). A request first *claims* its key; the claim records the event id
it will publish under, so a retry after a 503 (or after a crash between the Kafka ack and the
answer) publishes under the same event id and the streams derive the same invitation ids.
Only successful answers (202) are remembered; a concurrent duplicate of a key in flight waits
for the first one's outcome instead of publishing again (in this process through a future, in
another replica by polling the shared row). A pending claim whose owner died becomes
re-claimable after `stale_after` seconds, under its recorded event id. Rows older than the
window are purged.

Two backends, one set of rules:
- SQLite (WAL) under `settings.var_dir`, the default: one process, or processes on one host.
- PostgreSQL (`HOOKSTREAM_IDEMPOTENCY_URL`, `ingress/idempotency_pg.py`): what several
  replicas need. Every claim is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE` statement,
  so two replicas racing for a key get exactly one claim; times come from the server's clock.

Every statement runs off the event loop, on the store's own threads (SQLite: one thread, one
connection; PostgreSQL: a small pool). Requests without a key never touch the store.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from automations.ids import new_event_id
from core.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    automation TEXT NOT NULL,
    key        TEXT NOT NULL,
    state      TEXT NOT NULL,      -- pending | done | failed
    event_id   TEXT NOT NULL,
    status     INTEGER,
    body       BLOB,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    owner      TEXT NOT NULL,
    PRIMARY KEY (automation, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_updated ON idempotency (updated_at);
"""


@dataclass(frozen=True)
class Replay:
    """The remembered answer of an earlier request with the same key."""
    status: int
    body: bytes


@dataclass(frozen=True)
class KeyClaim:
    """This request owns the key: publish under `event_id`, then complete or release."""
    automation: str
    key: str
    event_id: str


class StoreUnavailable(Exception):
    """The shared store did not answer (PostgreSQL down or unreachable)."""


class Backend(Protocol):
    """The SQL of one store. Every method blocks: the store calls them on its threads."""

    threads: int

    def open(self) -> None: ...

    def close(self) -> None: ...

    def try_claim(self, automation: str, key: str, event_id: str, owner: str, window: float,
                  stale_after: float) -> Replay | KeyClaim | None:
        """A claim (new, failed, stale or expired row), the remembered answer, or None when
        the key is pending elsewhere (or the row moved under us: try again)."""
        ...

    def complete(self, automation: str, key: str, status: int, body: bytes) -> None: ...

    def release(self, automation: str, key: str, owner: str) -> None: ...

    def purge(self, window: float, stale_after: float, now: float | None = None) -> int: ...


class SqliteBackend:
    """The per-host store: a SQLite file in WAL mode, used from one thread."""

    threads = 1  # one connection; SQLite serialises writers anyway

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        db.execute("PRAGMA busy_timeout=2000")
        db.executescript(SCHEMA)
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the idempotency store is not open")
        return self._db

    def purge(self, window: float, stale_after: float, now: float | None = None) -> int:
        t = time.time() if now is None else now
        cur = self.db.execute(
            "DELETE FROM idempotency WHERE created_at < ? AND "
            "(state != 'pending' OR updated_at < ?)", (t - window, t - stale_after))
        return cur.rowcount

    def try_claim(self, automation: str, key: str, event_id: str, owner: str, window: float,
                  stale_after: float) -> Replay | KeyClaim | None:
        db = self.db
        now = time.time()
        cur = db.execute(
            "INSERT INTO idempotency (automation, key, state, event_id, created_at, updated_at,"
            " owner) VALUES (?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (automation, key, event_id, now, now, owner))
        if cur.rowcount == 1:
            return KeyClaim(automation, key, event_id)
        row = db.execute(
            "SELECT state, event_id, status, body, created_at, updated_at, owner "
            "FROM idempotency WHERE automation = ? AND key = ?", (automation, key)).fetchone()
        if row is None:
            return None  # purged between our insert and select: go round again
        state, old_event_id, status, body, created_at, updated_at, row_owner = row
        if state == "pending" and row_owner == owner:
            # Ours, and nobody in this process holds it (its answer could not be recorded,
            # or its request was cancelled): take it again, under its event id.
            return KeyClaim(automation, key, old_event_id)
        if created_at < now - window and state != "pending":
            db.execute("DELETE FROM idempotency WHERE automation = ? AND key = ? AND "
                       "created_at = ?", (automation, key, created_at))
            return None
        if state == "done":
            return Replay(int(status), bytes(body))
        if state == "failed" or updated_at < now - stale_after:
            cur = db.execute(
                "UPDATE idempotency SET state = 'pending', updated_at = ?, owner = ? "
                "WHERE automation = ? AND key = ? AND state = ? AND updated_at = ?",
                (now, owner, automation, key, state, updated_at))
            if cur.rowcount == 1:
                # Reuse the event id: whatever the earlier attempt left on Kafka has the same.
                return KeyClaim(automation, key, old_event_id)
        return None

    def complete(self, automation: str, key: str, status: int, body: bytes) -> None:
        self.db.execute(
            "UPDATE idempotency SET state = 'done', status = ?, body = ?, updated_at = ? "
            "WHERE automation = ? AND key = ?", (status, body, time.time(), automation, key))

    def release(self, automation: str, key: str, owner: str) -> None:
        self.db.execute(
            "UPDATE idempotency SET state = 'failed', updated_at = ? "
            "WHERE automation = ? AND key = ? AND owner = ?",
            (time.time(), automation, key, owner))


def backend_for(target: Path | str) -> Backend:
    """SQLite for a path or a `sqlite:///` URL; PostgreSQL for a `postgresql://` URL."""
    if isinstance(target, Path):
        return SqliteBackend(target)
    if target.startswith("sqlite:///"):
        return SqliteBackend(Path(target.removeprefix("sqlite:///")))
    if target.startswith(("postgresql:", "postgresql+", "postgres:")):
        from ingress.idempotency_pg import PostgresBackend  # SQLAlchemy only when used
        return PostgresBackend(target)
    raise ValueError("HOOKSTREAM_IDEMPOTENCY_URL must be a sqlite:/// or postgresql:// URL")


class IdempotencyStore:
    """The store the webhook uses: `begin` -> (publish) -> `complete` or `release`."""

    def __init__(self, target: Path | str | Backend, window_seconds: float,
                 stale_after: float = 15.0) -> None:
        self.backend: Backend = target if not isinstance(target, Path | str) \
            else backend_for(target)
        self.window = window_seconds
        # A pending claim older than this belonged to a process that died mid-request.
        self.stale_after = stale_after
        self.owner = uuid.uuid4().hex
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: dict[tuple[str, str], asyncio.Future[Replay | None]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> IdempotencyStore:
        target: Path | str = settings.idempotency_url or \
            settings.var_dir / "ingress-idempotency.sqlite3"
        # Longer than any request may legitimately hold its claim (the Kafka send timeout).
        return cls(target, settings.idempotency_window_seconds,
                   stale_after=settings.ingress_send_timeout_seconds + 10.0)

    def open(self) -> None:
        """Blocking (a startup step): connects, creates or migrates the table, purges."""
        self.backend.open()
        self._executor = ThreadPoolExecutor(self.backend.threads,
                                            thread_name_prefix="idempotency")
        # On the store's threads, like every statement: a backend may keep a connection per
        # thread (PostgreSQL does), and its pool has one for each of them, no more.
        self._executor.submit(self.purge).result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.backend.close()

    def purge(self, now: float | None = None) -> int:
        """Forget keys older than the window; returns how many rows went (blocking)."""
        return self.backend.purge(self.window, self.stale_after, now)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            raise RuntimeError("the idempotency store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def begin(self, automation: str, key: str, *,
                    max_wait: float = 30.0) -> Replay | KeyClaim:
        """The remembered answer for this key, or the claim to publish it now."""
        ident = (automation, key)
        deadline = time.monotonic() + max_wait
        pause = 0.02
        while True:
            waiting = self._inflight.get(ident)
            if waiting is not None:
                # Same process, same key in flight: share its outcome (within our wait).
                remaining = deadline - time.monotonic()
                try:
                    result = await asyncio.wait_for(asyncio.shield(waiting),
                                                    max(remaining, 0.0))
                except TimeoutError:
                    raise TimeoutError(
                        f"idempotency key still in flight after {max_wait:.0f}s") from None
                if result is not None:
                    return result
                continue  # the first failed: try to claim it ourselves
            # Reserved before the thread hop, so a duplicate arriving meanwhile waits on it.
            fut: asyncio.Future[Replay | None] = asyncio.get_running_loop().create_future()
            self._inflight[ident] = fut
            try:
                outcome = await self._run(self.backend.try_claim, automation, key,
                                          new_event_id(), self.owner, self.window,
                                          self.stale_after)
            except BaseException:
                self._resolve(ident, None)
                raise
            if isinstance(outcome, KeyClaim):
                return outcome  # the future stays until complete/release
            self._resolve(ident, outcome)
            if outcome is not None:
                return outcome
            # Pending in another replica (or a dead one): poll until done, failed or stale.
            if time.monotonic() > deadline:
                raise TimeoutError(f"idempotency key still in flight after {max_wait:.0f}s")
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.2)

    async def complete(self, claim: KeyClaim, status: int, body: bytes) -> None:
        """Remember the successful answer and hand it to waiting duplicates."""
        try:
            await self._run(self.backend.complete, claim.automation, claim.key, status, body)
        finally:
            self._resolve((claim.automation, claim.key), Replay(status, body))

    async def release(self, claim: KeyClaim) -> None:
        """Not answered with success: the key may be retried (under the same event id)."""
        try:
            await self._run(self.backend.release, claim.automation, claim.key, self.owner)
        finally:
            self._resolve((claim.automation, claim.key), None)

    def _resolve(self, ident: tuple[str, str], result: Replay | None) -> None:
        fut = self._inflight.pop(ident, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    async def purge_forever(self, interval: float = 60.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                gone = await self._run(self.purge)
            except Exception as exc:  # noqa: BLE001 - any store error: report, try next time
                log.error("purging expired idempotency keys failed: %s", exc)
                continue
            if gone:
                log.info("purged %d expired idempotency keys", gone)
