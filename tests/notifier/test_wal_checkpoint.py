"""The notifier's SQLite checkpoints run on a thread of their own, not inside a batch's
commit (notifier.wal_checkpoint, issue 17): the batches' connection only checkpoints past a
high backstop, and the checkpointer keeps the write-ahead log short meanwhile."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sqlalchemy import Connection

from notifier import store
from notifier.migrations import migrate
from notifier.wal_checkpoint import BACKSTOP_PAGES

SQLITE_DEFAULT_CHECKPOINT_BYTES = 1000 * 4096  # wal_autocheckpoint's default, 4 KiB pages


async def test_the_checkpointer_keeps_the_log_short_off_the_batch_thread(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/notifier.db"
    migrate(url)
    db = store.Db(url)
    assert db._checkpointer is not None
    db._checkpointer.interval = 0.05
    wal = tmp_path / "notifier.db-wal"

    def create(conn: Connection) -> None:
        conn.exec_driver_sql("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)")

    def autocheckpoint(conn: Connection) -> int:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() or 0)

    def insert(conn: Connection) -> None:
        conn.exec_driver_sql("INSERT INTO filler (data) VALUES (?)", (os.urandom(40_000),))

    try:
        await db.tx(create)
        # The batches' own commits checkpoint only past the backstop...
        assert await db.tx(autocheckpoint) == BACKSTOP_PAGES
        # ...so ~12 MB written (three times what SQLite's default would let the log hold,
        # under the backstop) stay short in the log only thanks to the checkpointer.
        largest = 0
        for _ in range(300):
            await db.tx(insert)
            largest = max(largest, wal.stat().st_size)
            await asyncio.sleep(0.005)
        assert db._checkpointer.runs > 0
        assert db._checkpointer.last is not None and db._checkpointer.last[0] == 0  # not busy
        assert largest < SQLITE_DEFAULT_CHECKPOINT_BYTES, largest
    finally:
        await db.close()
    assert db._checkpointer._thread is None  # stopped with the database


async def test_postgres_has_no_checkpointer() -> None:
    db = store.Db("postgresql+psycopg://u:p@127.0.0.1:1/none")
    try:
        assert db._checkpointer is None
    finally:
        db.engine.dispose()
