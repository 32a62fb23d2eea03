"""The scheduler's local store of waiting invitations: one SQLite file per partition.

Rows are indexed by due_at, so the next due invitations are an index range scan whatever
their arrival order (no head-of-line blocking) and memory stays at SQLite's page cache
however many wait. The file is a cache of the partition's changelog topic: `next_offset`
records how far the changelog has been applied, in the same SQLite transaction as the rows,
so after a crash the store replays the changelog from there and is exact again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS waiting (
    invitation_id TEXT PRIMARY KEY,
    due_at INTEGER NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS waiting_due ON waiting (due_at);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
"""


class WaitingStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # The changelog is the durable copy; NORMAL still keeps the file consistent.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-16000")  # 16 MB, whatever the row count
        self.db.executescript(_SCHEMA)

    @property
    def next_offset(self) -> int:
        row = self.db.execute("SELECT v FROM meta WHERE k='next_offset'").fetchone()
        return 0 if row is None else int(row[0])

    def apply(self, changes: Iterable[tuple[str, int, bytes | None]], next_offset: int) -> None:
        """Apply (id, due_at, value or None to delete) in order, and the changelog position."""
        with _transaction(self.db):
            for inv_id, due_at, value in changes:
                if value is None:
                    self.db.execute("DELETE FROM waiting WHERE invitation_id=?", (inv_id,))
                else:
                    self.db.execute(
                        "INSERT INTO waiting (invitation_id, due_at, value) VALUES (?,?,?) "
                        "ON CONFLICT(invitation_id) DO UPDATE SET due_at=excluded.due_at, "
                        "value=excluded.value", (inv_id, due_at, value))
            self._set_offset(next_offset)

    def put_many(self, rows: list[tuple[str, int, bytes]], next_offset: int) -> None:
        with _transaction(self.db):
            self.db.executemany(
                "INSERT INTO waiting (invitation_id, due_at, value) VALUES (?,?,?) "
                "ON CONFLICT(invitation_id) DO UPDATE SET due_at=excluded.due_at, "
                "value=excluded.value", rows)
            self._set_offset(next_offset)

    def delete_many(self, ids: list[str], next_offset: int) -> None:
        with _transaction(self.db):
            self.db.executemany("DELETE FROM waiting WHERE invitation_id=?",
                                [(i,) for i in ids])
            self._set_offset(next_offset)

    def due(self, now_ms: int, limit: int) -> list[tuple[str, int, bytes]]:
        return self.db.execute(
            "SELECT invitation_id, due_at, value FROM waiting WHERE due_at <= ? "
            "ORDER BY due_at LIMIT ?", (now_ms, limit)).fetchall()

    def next_due(self) -> int | None:
        row = self.db.execute("SELECT min(due_at) FROM waiting").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM waiting").fetchone()[0])

    def reset(self) -> None:
        """Forget everything (the changelog will be replayed from its start)."""
        with _transaction(self.db):
            self.db.execute("DELETE FROM waiting")
            self._set_offset(0)

    def close(self) -> None:
        self.db.close()

    def _set_offset(self, next_offset: int) -> None:
        self.db.execute("INSERT INTO meta (k, v) VALUES ('next_offset', ?) "
                        "ON CONFLICT(k) DO UPDATE SET v=excluded.v", (next_offset,))


class _transaction:
    """BEGIN/COMMIT, ROLLBACK on error (the connection runs in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
