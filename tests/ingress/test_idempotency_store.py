"""The idempotency store on both backends: SQLite (one host) and PostgreSQL (shared by replicas).

The same rules on each: a claim records its event id; a failed claim is retried under it; an
answer is replayed; a dead owner's claim is taken over once stale, under its event id; past
the window a key is new; purge forgets. Several stores (as several replicas) racing for one key
get exactly one claim, and the others the first one's answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, create_engine, text

from ingress.idempotency import IdempotencyStore, KeyClaim, Replay
from ingress.migrations import migrate
from ingress.tables import METADATA

Factory = Callable[..., IdempotencyStore]


@pytest.fixture(params=["sqlite", "postgresql"])
async def make_store(request: pytest.FixtureRequest,
                     tmp_path: Path) -> AsyncIterator[Factory]:
    if request.param == "sqlite":
        target: Path | str = tmp_path / "i.sqlite3"
    else:
        target = request.getfixturevalue("postgres_db")
    opened: list[IdempotencyStore] = []

    def make(window: float = 60.0, stale_after: float = 15.0) -> IdempotencyStore:
        store = IdempotencyStore(target, window_seconds=window, stale_after=stale_after)
        store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


async def test_claim_failure_replay_takeover_window_purge(make_store: Factory) -> None:
    store = make_store(window=1.5, stale_after=0.6)
    replica = make_store(window=1.5, stale_after=0.6)  # another replica on the same store
    claim = await store.begin("a", "k")
    assert isinstance(claim, KeyClaim)
    await store.release(claim)  # a 503: the retry may publish, under the same event id
    retry = await store.begin("a", "k")
    assert isinstance(retry, KeyClaim) and retry.event_id == claim.event_id
    await store.complete(retry, 202, b'{"x":1}')
    assert await store.begin("a", "k") == Replay(202, b'{"x":1}')
    other = await store.begin("b", "k")  # keys are per automation
    assert isinstance(other, KeyClaim) and other.event_id != claim.event_id
    # `other` is never answered, as if its process died: another store (another replica)
    # waits while the claim is fresh, then takes it over under the same event id.
    t0 = time.monotonic()
    taken = await replica.begin("b", "k")
    assert isinstance(taken, KeyClaim) and taken.event_id == other.event_id
    assert time.monotonic() - t0 >= 0.4
    # The dead owner's late release does not undo the new owner's claim.
    await store.release(other)
    with pytest.raises(TimeoutError):
        await store.begin("b", "k", max_wait=0.3)  # still pending, under the replica
    await replica.complete(taken, 202, b'{"y":2}')
    assert await store.begin("b", "k") == Replay(202, b'{"y":2}')
    await asyncio.sleep(1.6)
    fresh = await store.begin("a", "k")  # past the window: a new request
    assert isinstance(fresh, KeyClaim) and fresh.event_id != claim.event_id
    await store.complete(fresh, 202, b"{}")
    assert store.purge(time.time() + 100) >= 1
    assert isinstance(await store.begin("a", "k"), KeyClaim)  # purged: new again


async def test_replicas_racing_for_a_key_get_one_claim(make_store: Factory) -> None:
    replicas = [make_store() for _ in range(3)]
    tasks = [asyncio.create_task(r.begin("a", "race", max_wait=20))
             for r in replicas for _ in range(4)]
    done, pending = await asyncio.wait(tasks, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    claims = [t.result() for t in done]
    assert len(claims) == 1 and isinstance(claims[0], KeyClaim), claims
    await asyncio.sleep(0.3)
    # In flight: no other request (in this replica or another) claims or is answered.
    assert all(not t.done() for t in pending)
    owner = replicas[tasks.index(next(iter(done))) // 4]  # the replica that claimed
    await owner.complete(claims[0], 202, b'{"event_id":"e"}')
    answers = await asyncio.gather(*pending)
    assert answers == [Replay(202, b'{"event_id":"e"}')] * 11


async def test_many_keys_at_once_use_every_store_thread(make_store: Factory) -> None:
    """More requests in flight than the store has threads (and connections): all claimed and
    answered, none waits for a connection (a startup statement holds none of them)."""
    store = make_store()
    t0 = time.monotonic()
    claims = await asyncio.gather(*[store.begin("a", f"k{i}") for i in range(40)])
    assert all(isinstance(c, KeyClaim) for c in claims)
    await asyncio.gather(*[store.complete(c, 202, b"{}") for c in claims
                           if isinstance(c, KeyClaim)])
    assert await store.begin("a", "k39") == Replay(202, b"{}")
    assert time.monotonic() - t0 < 10


async def test_a_waiter_gives_up_after_max_wait(make_store: Factory) -> None:
    first, second = make_store(), make_store()
    assert isinstance(await first.begin("a", "slow"), KeyClaim)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await second.begin("a", "slow", max_wait=0.5)
    assert 0.45 <= time.monotonic() - t0 < 3


def _schema_drift(conn: Connection) -> list[object]:
    """What differs between the database's ingress tables and ingress/tables.py."""
    ctx = MigrationContext.configure(conn, opts={
        "version_table": "alembic_version_ingress",
        "include_name": lambda name, kind, _p: kind != "table" or name in METADATA.tables})
    return compare_metadata(ctx, METADATA)


def test_the_postgres_tables_come_from_the_ingress_migrations(postgres_db: str) -> None:
    store = IdempotencyStore(postgres_db, window_seconds=60)
    store.open()
    store.close()
    again = IdempotencyStore(postgres_db, window_seconds=60)
    again.open()  # a second replica (or a restart): the table is there, nothing to do
    again.close()
    engine = create_engine(postgres_db)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version_ingress"))
            assert version.scalar_one() == "0202_rate_buckets"
            # The history and ingress/tables.py describe the same schema.
            assert _schema_drift(conn) == []
    finally:
        engine.dispose()


def test_a_rate_table_made_by_the_first_release_is_adopted(postgres_db: str) -> None:
    """The first shared rate limiter created its table by hand; the history takes it over
    (rows kept) instead of failing on CREATE TABLE."""
    engine = create_engine(postgres_db)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE ingress_rate_buckets (automation_id text PRIMARY KEY, "
                              "tokens float8 NOT NULL, refilled_at float8 NOT NULL, "
                              "granted integer NOT NULL)"))
            conn.execute(text("INSERT INTO ingress_rate_buckets VALUES ('a', 1.5, 0, 0)"))
        migrate(postgres_db)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT tokens FROM ingress_rate_buckets")).scalar_one() == 1.5
            assert _schema_drift(conn) == []
    finally:
        engine.dispose()


async def test_postgres_connections_lost_are_replaced(postgres_db: str) -> None:
    """A PostgreSQL restart (here: every connection of the store terminated) costs no request:
    the statement runs again on a new connection; a claim already made is still this
    store's, under its event id."""
    store = IdempotencyStore(postgres_db, window_seconds=60)
    store.open()
    engine = create_engine(postgres_db, isolation_level="AUTOCOMMIT")
    try:
        first = await store.begin("a", "before")
        assert isinstance(first, KeyClaim)
        with engine.connect() as conn:
            gone = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
        assert gone >= 1
        await store.complete(first, 202, b"{}")  # on a new connection
        assert await store.begin("a", "before") == Replay(202, b"{}")
        # A claim whose answer was lost (no complete, no release) is taken again by the
        # same store at once, under its event id; another replica would wait until stale.
        lost = await store.begin("a", "lost")
        assert isinstance(lost, KeyClaim)
        store._inflight.pop(("a", "lost"))  # as when the request was cancelled mid-way
        again = await store.begin("a", "lost", max_wait=1)
        assert isinstance(again, KeyClaim) and again.event_id == lost.event_id
    finally:
        engine.dispose()
        store.close()
