"""The idempotency store several ingress replicas share: one PostgreSQL table.

The table (`ingress/tables.py`) belongs to the ingress and comes with its Alembic history
(`ingress/migrations`, version table `alembic_version_ingress`), like the control plane's and
the notifier's: each replica runs it on start under core.sql's advisory lock, so replicas
starting together create it once, and a later change to the table has somewhere to go.

Exact under concurrency without a coordinator: a claim is ONE statement, an
`INSERT ... ON CONFLICT DO UPDATE ... WHERE` that takes a new, failed, stale or expired row
and leaves a pending or answered one alone. PostgreSQL locks the conflicting row and
re-evaluates the WHERE on its newest version, so of two replicas racing for a key exactly one
gets RETURNING's row. The same statement reads the row when it did not claim it (answer to
replay, or pending elsewhere). Every time comes from the server's clock (`now()`), so clock
skew between replicas moves neither the window nor the takeover of a dead replica's claim.

Each store thread keeps one connection in autocommit (one round trip a statement, no
BEGIN/COMMIT); a broken one is dropped and the next statement reconnects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from core.sql import make_engine
from ingress.idempotency import KeyClaim, Replay, StoreUnavailable
from ingress.tables import IDEMPOTENCY

T = TypeVar("T")

TABLE = IDEMPOTENCY

_EXPIRED = "t.created_at < now() - make_interval(secs => :window)"
CLAIM = text(f"""
WITH claim AS (
    INSERT INTO ingress_idempotency AS t
        (automation, key, state, event_id, owner, created_at, updated_at)
    VALUES (:automation, :key, 'pending', :event_id, :owner, now(), now())
    ON CONFLICT (automation, key) DO UPDATE SET
        state = 'pending', owner = EXCLUDED.owner, updated_at = EXCLUDED.updated_at,
        status = NULL, body = NULL,
        -- past the window an answered or failed key is a new request: a new event id;
        -- otherwise the retry publishes under the event id the first attempt used
        event_id = CASE WHEN t.state <> 'pending' AND {_EXPIRED}
                        THEN EXCLUDED.event_id ELSE t.event_id END,
        created_at = CASE WHEN t.state <> 'pending' AND {_EXPIRED}
                          THEN EXCLUDED.created_at ELSE t.created_at END
    WHERE t.state = 'failed'
       OR (t.state = 'pending' AND t.updated_at < now() - make_interval(secs => :stale))
       OR (t.state = 'done' AND {_EXPIRED})
    RETURNING t.event_id
)
SELECT 'claimed' AS state, event_id, NULL::integer AS status, NULL::bytea AS body,
       :owner AS owner FROM claim
UNION ALL
SELECT state, event_id, status, body, owner FROM ingress_idempotency
 WHERE automation = :automation AND key = :key AND NOT EXISTS (SELECT 1 FROM claim)
""")
COMPLETE = text(
    "UPDATE ingress_idempotency SET state = 'done', status = :status, body = :body, "
    "updated_at = now() WHERE automation = :automation AND key = :key")
RELEASE = text(
    "UPDATE ingress_idempotency SET state = 'failed', updated_at = now() "
    "WHERE automation = :automation AND key = :key AND owner = :owner")
_NOW = "COALESCE(to_timestamp(CAST(:now AS double precision)), now())"  # :now for tests
PURGE = text(
    f"DELETE FROM ingress_idempotency AS t WHERE t.created_at < "
    f"{_NOW} - make_interval(secs => :window) AND (t.state <> 'pending' OR "
    f"t.updated_at < {_NOW} - make_interval(secs => :stale))")


class PostgresBackend:
    """The shared store; its methods block and run on the store's threads."""

    threads = 4  # connections per replica: a claim or an answer is ~one round trip each

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Connection] = []

    def open(self) -> None:
        from ingress.migrations import migrate  # Alembic only where PostgreSQL is used
        migrate(self.url)
        self._engine = make_engine(
            self.url, isolation_level="AUTOCOMMIT", pool_size=self.threads, max_overflow=0,
            # A dead server fails the request in seconds (503), it does not hang it.
            connect_args={"connect_timeout": 5, "options": "-c statement_timeout=10000"})

    def close(self) -> None:
        with self._lock:
            conns, self._connections = self._connections, []
        for conn in conns:
            conn.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _with_connection(self, fn: Callable[[Connection], T]) -> T:
        try:
            return self._attempt(fn)
        except _Reconnect:
            # The connection was broken (a PostgreSQL restart, a failover): once more on a
            # new one. Safe for every statement here: a claim that did land before the
            # connection broke is pending under our owner, which try_claim takes as ours.
            return self._attempt(fn, last=True)

    def _attempt(self, fn: Callable[[Connection], T], last: bool = False) -> T:
        conn: Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                if self._engine is None:
                    raise RuntimeError("the idempotency store is not open")
                conn = self._engine.connect()
                self._local.conn = conn
                with self._lock:
                    self._connections.append(conn)
            return fn(conn)
        except DBAPIError as exc:
            if conn is not None and (exc.connection_invalidated or conn.invalidated
                                     or conn.closed or _broken(exc)):
                self._drop(conn)
                if not last:
                    raise _Reconnect from exc
            raise StoreUnavailable(f"the idempotency store failed: {type(exc.orig).__name__}") \
                from exc
        except SQLAlchemyError as exc:  # e.g. no connection free in the pool in time
            raise StoreUnavailable(f"the idempotency store failed: {type(exc).__name__}") \
                from exc

    def _drop(self, conn: Connection) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        try:
            conn.invalidate()
        except DBAPIError:
            pass  # already gone: nothing left to release

    def try_claim(self, automation: str, key: str, event_id: str, owner: str, window: float,
                  stale_after: float) -> Replay | KeyClaim | None:
        params = {"automation": automation, "key": key, "event_id": event_id,
                  "owner": owner, "window": window, "stale": stale_after}
        row = self._with_connection(lambda c: c.execute(CLAIM, params).first())
        if row is None:
            return None  # purged meanwhile, or inserted by a transaction we cannot see yet
        state, old_event_id, status, body, row_owner = row
        if state == "claimed" or (state == "pending" and row_owner == owner):
            # Pending under our own owner: this process claimed it and nobody in it holds it
            # (the claim's answer was lost with a connection, or its request was cancelled).
            return KeyClaim(automation, key, old_event_id)
        if state == "done":
            return Replay(int(status), bytes(body))
        return None  # pending in another replica

    def complete(self, automation: str, key: str, status: int, body: bytes) -> None:
        params = {"automation": automation, "key": key, "status": status, "body": body}
        self._with_connection(lambda c: c.execute(COMPLETE, params))

    def release(self, automation: str, key: str, owner: str) -> None:
        params = {"automation": automation, "key": key, "owner": owner}
        self._with_connection(lambda c: c.execute(RELEASE, params))

    def purge(self, window: float, stale_after: float, now: float | None = None) -> int:
        params: dict[str, Any] = {"now": now, "window": window, "stale": stale_after}
        return self._with_connection(lambda c: c.execute(PURGE, params).rowcount)


class _Reconnect(Exception):
    """The thread's connection broke: try the statement again on a new one."""


def _broken(exc: DBAPIError) -> bool:
    """A lost or refused connection (SQLSTATE class 08, or the server shutting down: 57P)."""
    code = getattr(exc.orig, "sqlstate", None) or ""
    return code.startswith(("08", "57P"))
