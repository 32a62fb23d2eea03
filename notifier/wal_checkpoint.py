"""SQLite checkpoints off the notifier's database thread (issue 17).

In WAL mode SQLite copies the log back into the database file (a checkpoint) inside the
commit that finds the log over `wal_autocheckpoint` pages (1,000 by default), and with
`synchronous=NORMAL` that checkpoint fsyncs both files. On ext4 an fsync also waits for other
files' freshly written data, here the broker's log segments on the same disk: in the
end-to-end benchmark one such commit took 0.34 s while every claim queued behind it on the
one database thread and the SMTP connections sat idle (bench/README.md, "SQLite checkpoints").

So the batches' connection checkpoints by itself only past `BACKSTOP_PAGES` (if this thread
falls behind or stops), and `WalCheckpointer`, a thread of its own with its own connection,
runs a PASSIVE checkpoint every `interval` seconds in which the database was written. A
PASSIVE checkpoint takes no writer's lock: commits go on meanwhile. Durability is unchanged
(the same pragmas, the same fsyncs, on another thread).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

from prometheus_client import Histogram
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

# ~40 MB of 4 KiB pages: the log's bound should the checkpointer fall behind.
BACKSTOP_PAGES = 10_000

CHECKPOINT_SECONDS = Histogram(
    "hookstream_notifier_sqlite_checkpoint_seconds",
    "Time of one background SQLite WAL checkpoint (its fsyncs included); SQLite only.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


class WalCheckpointer:
    """A daemon thread: `PRAGMA wal_checkpoint(PASSIVE)` every `interval` seconds after
    `written()` was called. `last` is SQLite's answer to the latest one:
    (busy, frames in the log, frames checkpointed)."""

    def __init__(self, engine: Engine, interval: float = 1.0) -> None:
        self.engine = engine
        self.interval = interval
        self.last: tuple[int, int, int] | None = None
        self.runs = 0
        # Set per batch on the hot path, read here: a plain flag (no lock) is enough.
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def written(self) -> None:
        """The database was written: checkpoint at the next interval."""
        self._dirty = True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="notifier-wal-checkpoint",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        conn = None
        try:
            while not self._stop.wait(self.interval):
                if not self._dirty:
                    continue  # idle: no fsync for nothing
                self._dirty = False
                try:
                    if conn is None:
                        conn = self.engine.raw_connection()
                    self.checkpoint(conn)
                except (DBAPIError, sqlite3.Error) as exc:
                    # The commits' backstop still bounds the log; the next interval retries.
                    log.warning("SQLite checkpoint failed (%s); retrying in %.0fs",
                                type(exc).__name__, self.interval)
                    _close(conn)
                    conn = None
                    self._dirty = True
        finally:
            _close(conn)

    def checkpoint(self, conn: Any) -> tuple[int, int, int]:
        t0 = time.perf_counter()
        cur = conn.cursor()
        try:
            cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
            busy, frames, done = cur.fetchone()
        finally:
            cur.close()
        CHECKPOINT_SECONDS.observe(time.perf_counter() - t0)
        self.last = (int(busy), int(frames), int(done))
        self.runs += 1
        return self.last


def _close(conn: Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except (DBAPIError, sqlite3.Error) as exc:  # already broken: the pool discards it
            log.debug("closing the checkpoint connection: %s", type(exc).__name__)
