"""A durable memory of answered `Idempotency-Key`s: SQLite (WAL) under `settings.var_dir`.

Keyed by (automation, key). A request first *claims* its key; the claim records the event id
it will publish under, so a retry after a 503 (or after a crash between the Kafka ack and the
answer) publishes under the same event id and the streams derive the same invitation ids.
Only successful answers (202) are remembered; a concurrent duplicate of a key in flight waits
for the first one's outcome instead of publishing again. The store survives restarts; rows
older than the window are purged.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from automations.ids import new_event_id

log = logging.getLogger(__name__)

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


class IdempotencyStore:
    def __init__(self, path: Path, window_seconds: float, stale_after: float = 15.0) -> None:
        self.path = Path(path)
        self.window = window_seconds
        # A pending claim older than this belonged to a process that died mid-request.
        self.stale_after = stale_after
        self.owner = uuid.uuid4().hex
        self._db: sqlite3.Connection | None = None
        self._inflight: dict[tuple[str, str], asyncio.Future[Replay | None]] = {}

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        db.execute("PRAGMA busy_timeout=2000")
        db.executescript(SCHEMA)
        self._db = db
        self.purge()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the idempotency store is not open")
        return self._db

    def purge(self, now: float | None = None) -> int:
        """Forget keys older than the window; returns how many rows went."""
        t = time.time() if now is None else now
        cur = self.db.execute(
            "DELETE FROM idempotency WHERE created_at < ? AND "
            "(state != 'pending' OR updated_at < ?)", (t - self.window, t - self.stale_after))
        return cur.rowcount

    async def begin(self, automation: str, key: str, *,
                    max_wait: float = 30.0) -> Replay | KeyClaim:
        """The remembered answer for this key, or the claim to publish it now."""
        ident = (automation, key)
        deadline = time.monotonic() + max_wait
        while True:
            waiting = self._inflight.get(ident)
            if waiting is not None:
                # Same process, same key in flight: share its outcome.
                result = await asyncio.shield(waiting)
                if result is not None:
                    return result
                continue  # the first failed: try to claim it ourselves
            outcome = self._try_claim(automation, key, time.time())
            if outcome is not None:
                return outcome
            # Pending in another process (or a crashed one): poll until done or stale.
            if time.monotonic() > deadline:
                raise TimeoutError(f"idempotency key still in flight after {max_wait:.0f}s")
            await asyncio.sleep(0.05)

    def _try_claim(self, automation: str, key: str, now: float) -> Replay | KeyClaim | None:
        db = self.db
        event_id = new_event_id()
        cur = db.execute(
            "INSERT INTO idempotency (automation, key, state, event_id, created_at, updated_at,"
            " owner) VALUES (?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (automation, key, event_id, now, now, self.owner))
        if cur.rowcount == 1:
            return self._claimed(automation, key, event_id)
        row = db.execute(
            "SELECT state, event_id, status, body, created_at, updated_at FROM idempotency "
            "WHERE automation = ? AND key = ?", (automation, key)).fetchone()
        if row is None:
            return None  # purged between our insert and select: go round again
        state, old_event_id, status, body, created_at, updated_at = row
        if created_at < now - self.window and state != "pending":
            db.execute("DELETE FROM idempotency WHERE automation = ? AND key = ? AND "
                       "created_at = ?", (automation, key, created_at))
            return None
        if state == "done":
            return Replay(int(status), bytes(body))
        if state == "failed" or updated_at < now - self.stale_after:
            cur = db.execute(
                "UPDATE idempotency SET state = 'pending', updated_at = ?, owner = ? "
                "WHERE automation = ? AND key = ? AND state = ? AND updated_at = ?",
                (now, self.owner, automation, key, state, updated_at))
            if cur.rowcount == 1:
                # Reuse the event id: whatever the earlier attempt left on Kafka has the same.
                return self._claimed(automation, key, old_event_id)
        return None

    def _claimed(self, automation: str, key: str, event_id: str) -> KeyClaim:
        self._inflight[(automation, key)] = asyncio.get_running_loop().create_future()
        return KeyClaim(automation, key, event_id)

    def complete(self, claim: KeyClaim, status: int, body: bytes) -> None:
        """Remember the successful answer and hand it to waiting duplicates."""
        self.db.execute(
            "UPDATE idempotency SET state = 'done', status = ?, body = ?, updated_at = ? "
            "WHERE automation = ? AND key = ?",
            (status, body, time.time(), claim.automation, claim.key))
        self._resolve(claim, Replay(status, body))

    def release(self, claim: KeyClaim) -> None:
        """Not answered with success: the key may be retried (under the same event id)."""
        try:
            self.db.execute(
                "UPDATE idempotency SET state = 'failed', updated_at = ? "
                "WHERE automation = ? AND key = ? AND owner = ?",
                (time.time(), claim.automation, claim.key, self.owner))
        finally:
            self._resolve(claim, None)

    def _resolve(self, claim: KeyClaim, result: Replay | None) -> None:
        fut = self._inflight.pop((claim.automation, claim.key), None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    async def purge_forever(self, interval: float = 60.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                gone = self.purge()
            except sqlite3.Error as exc:
                log.error("purging expired idempotency keys failed: %s", exc)
                continue
            if gone:
                log.info("purged %d expired idempotency keys", gone)
