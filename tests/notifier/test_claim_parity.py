"""The claim's two implementations agree: `notifier.store` (SQLAlchemy, the reference) and
`notifier.store_dbapi` (the driver's cursor, the notifier's default).

Every step runs on two databases of the same kind, one per implementation, with the same
clock and the same tokens; after it the results (or the SQLAlchemy exception class) and the
full contents of the notifier's tables, as the driver reads them (SQLite: the stored text of
timestamps and JSON), must be equal. Real SQLite and real PostgreSQL (`postgres_url`), a table
of cases plus Hypothesis' sequences of claims, finishes, leases running out and releases.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import DBAPIError, IntegrityError

from notifier import store, store_dbapi
from notifier.migrations import migrate
from tests.support import postgres

from .conftest import automation_error, invitation, make_snapshot

IMPLS: dict[str, dict[str, Callable[..., Any]]] = {
    "reference": {"claim": store.claim, "finish": store.finish},
    "dbapi": {"claim": store_dbapi.claim, "finish": store_dbapi.finish},
}
TABLES = ("respondents", "invitations", "automation_failure_streaks", "automation_errors")
START = datetime(2026, 12, 1, 8, 0, 0, 123456, tzinfo=UTC)
LEASE = timedelta(minutes=2)
WEEK = timedelta(days=7)
_TWINS = itertools.count()


class Twin:
    """The two databases, stepped together."""

    def __init__(self, ref: store.Db, fast: store.Db, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dbs = {"reference": ref, "dbapi": fast}
        self.now = START
        self.tokens: Iterator[str] = iter(())
        self.next_token = next(_TWINS) * 1_000_000  # tokens are unique in the database
        self.fixed_token: str | None = None
        twin = self

        class Frozen(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> Any:
                return twin.now

        for module in (store, store_dbapi):
            monkeypatch.setattr(module, "datetime", Frozen)
            monkeypatch.setattr(module, "new_token", self._token)

    def _token(self) -> str:
        return self.fixed_token or next(self.tokens)

    def advance(self, by: timedelta) -> None:
        self.now += by

    def tx(self, op: str, *args: Any, **kw: Any) -> Any:
        """`op` (claim, finish) by each implementation on its database, in one batch of
        `Db`; or a reference function of `store` (the rest of the notifier's SQL) on both."""
        results = {}
        for name, db in self.dbs.items():
            fn = IMPLS[name].get(op) or getattr(store, op)
            self.tokens = (f"tok-{n}" for n in itertools.count(self.next_token))
            try:
                results[name] = db._in_tx([store._Item(
                    lambda conn, fn=fn: fn(conn, *args, **kw), None)])[0]  # type: ignore[arg-type]
            except DBAPIError as exc:
                assert "@" not in str(exc) and "DETAIL" not in str(exc), "no values in it"
                results[name] = type(exc)
        self.next_token += 100
        assert repr(results["dbapi"]) == repr(results["reference"])  # bool, not 1
        assert self.rows(self.dbs["dbapi"]) == self.rows(self.dbs["reference"])
        return results["reference"]

    def claim(self, req: dict[str, Any], owner: str = "A", **kw: Any) -> Any:
        kw = {"survey_name": "Customer satisfaction", "lease": LEASE,
              "message_id": f"<{req['invitation_id']}@h>", "expiry": WEEK, **kw}
        return self.tx("claim", req, owner=owner, **kw)

    @staticmethod
    def rows(db: store.Db) -> dict[str, list[tuple[Any, ...]]]:
        with db.engine.connect() as conn:
            return {t: [tuple(r) for r in conn.exec_driver_sql(
                f"SELECT * FROM {t} ORDER BY 1")] for t in TABLES}  # noqa: S608 - our names


def _open(url: str) -> store.Db:
    migrate(url)
    return store.Db(url)


def _close(db: store.Db) -> None:
    db._drop_connection()
    db._executor.shutdown()
    db.engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[store.Db, store.Db]]:
    """Two migrated databases of one kind, kept for the module's tests (each test uses its
    own invitation ids and survey, so earlier rows are just more rows to compare)."""
    if request.param == "sqlite":
        folder: Path = tmp_path_factory.mktemp("parity")
        dbs = [_open(f"sqlite:///{folder}/{n}.db") for n in ("ref", "fast")]
        yield dbs[0], dbs[1]
        for db in dbs:
            _close(db)
        return
    server = request.getfixturevalue("postgres_url")
    made = [postgres.fresh_database(server) for _ in range(2)]
    dbs = [_open(url) for url, _ in made]
    try:
        yield dbs[0], dbs[1]
    finally:
        for db in dbs:
            _close(db)
        for _, name in made:
            postgres.drop_database(server, name)


@pytest.fixture
def twin(databases: tuple[store.Db, store.Db], monkeypatch: pytest.MonkeyPatch) -> Twin:
    return Twin(*databases, monkeypatch)


def _survey() -> Any:
    return make_snapshot(survey_id=f"survey-{next(_SURVEYS)}")


_SURVEYS = itertools.count()


def test_new_duplicate_busy_reclaimed_and_final(twin: Twin) -> None:
    snap = _survey()
    req = invitation(snap, email="Bob@Example.com", variables={"name": "Bob", "n": 1})
    assert twin.claim(req).kind == "new"
    assert twin.claim(req, owner="B").kind == "busy"  # A's lease is live
    twin.advance(timedelta(seconds=30))
    assert twin.claim(req).kind == "reclaimed"  # A's own row: no longer worked on here
    twin.advance(LEASE + timedelta(seconds=1))
    assert twin.claim(req, owner="B").kind == "reclaimed"  # the lease ran out: taken over
    twin.tx("touch", req["invitation_id"], "B", 2)
    assert twin.claim(req, owner="C").kind == "busy"
    twin.tx("touch", req["invitation_id"], "B", 3)
    twin.tx("finish", req["invitation_id"], status="sent", attempts=3, smtp_code=250,
            automation_id=snap.id)
    done = twin.claim(req, owner="C")
    assert (done.kind, done.status, done.attempts, done.outcome_published) == \
        ("final", "sent", 3, False)
    twin.tx("mark_published", [req["invitation_id"]])
    assert twin.claim(req, owner="C").outcome_published is True
    other = invitation(snap, email="carl@example.com")
    twin.claim(other)
    twin.tx("finish", other["invitation_id"], status="failed", attempts=1,
            reason="smtp_permanent: 550 no such user", smtp_code=550)
    assert twin.claim(other).status == "failed"


def test_a_released_claim_is_taken_over_at_once(twin: Twin) -> None:
    req = invitation(_survey(), email="dora@example.com")
    twin.claim(req, owner="A")
    for db in twin.dbs.values():
        store.release_claims(db.sessions, "A")  # sets claimed_at to the epoch
    assert twin.claim(req, owner="B").kind == "reclaimed"


def test_respondent_upsert_merges_by_received_at_and_throttles(twin: Twin) -> None:
    snap = _survey()
    first = invitation(snap, email="eve@example.com", variables={"name": "Eve", "city": "A"},
                       received_at=START - timedelta(hours=1))
    assert twin.claim(first).kind == "new"
    newer = invitation(snap, email="EVE@example.com", variables={"city": "B", "age": 3},
                       received_at=START)
    assert twin.claim(newer).kind == "new"  # the row's values: name Eve, city B, age 3
    late = invitation(snap, email="eve@example.com", variables={"city": "C", "plan": "pro"},
                      received_at=START - timedelta(days=2))
    assert twin.claim(late).kind == "new"  # only fills plan
    same = invitation(snap, email="eve@example.com", variables={"city": "D"},
                      received_at=START)
    assert twin.claim(same).kind == "new"  # received as the row's values: its values win
    throttle = store.Throttle(3, timedelta(days=3))
    within = invitation(snap, email="eve@example.com")
    throttled = twin.claim(within, throttle=throttle)
    assert throttled.kind == "throttled" and "throttled" in (throttled.reason or "")
    assert twin.claim(within, throttle=throttle).kind == "final"
    twin.advance(timedelta(days=3))  # the window's last instant: may be invited again
    after = invitation(snap, email="eve@example.com", variables={"age": 4},
                       received_at=twin.now)
    assert twin.claim(after, throttle=throttle).kind == "new"  # past the window
    fresh = invitation(snap, email="frank@example.com")
    assert twin.claim(fresh, throttle=throttle).kind == "new"  # no row yet: inserted


def test_suppressed_held_resumed_expired_and_dropped(twin: Twin) -> None:
    snap = _survey()
    hold = store.Hold("automation disabled", b"\x00request")
    req, old, gone, thr = (invitation(snap, email=f"{n}@example.com")
                           for n in ("held", "old", "gone", "thr"))
    old["due_at"] = START - timedelta(days=8)
    assert twin.claim(invitation(snap), suppress_reason="automation deleted").kind == \
        "suppressed"
    assert twin.claim(req, hold=hold).kind == "held"
    assert twin.claim(req, owner="B", hold=hold).kind == "held"  # still disabled
    assert twin.claim(old, hold=hold).kind == "expired"  # new, and past due + expiry
    assert twin.claim(gone, hold=hold).kind == "held"
    assert twin.claim(thr, hold=hold).kind == "held"
    resumed = twin.claim(req)  # enabled again: like a new one (its respondent upserted)
    assert resumed.kind == "new"
    assert twin.claim(req, owner="B").kind == "busy"
    dropped = twin.claim(gone, suppress_reason="automation deleted")
    assert (dropped.kind, dropped.reason) == ("suppressed", store.HELD_DELETED)
    throttle = store.Throttle(30, timedelta(days=30))
    twin.claim(invitation(snap, email="thr@example.com"), throttle=throttle)
    assert twin.claim(thr, throttle=throttle).kind == "throttled"  # resumed, then throttled
    late = invitation(snap, email="late@example.com")
    twin.claim(late, hold=hold)
    twin.advance(WEEK + timedelta(days=1))
    assert twin.claim(late, hold=hold).kind == "expired"  # held, and now past the expiry


def test_finish_ends_the_streak_once_per_transaction(twin: Twin) -> None:
    snap = _survey()
    twin.tx("record_error", automation_error(snap.id), counts=True)
    twin.tx("record_error", automation_error(snap.id), counts=True)
    reqs = [invitation(snap, email=f"s{i}@example.com") for i in range(3)]
    for r in reqs:
        twin.claim(r)
    for r in reqs:
        twin.tx("finish", r["invitation_id"], status="sent", attempts=1, smtp_code=250,
                automation_id=snap.id)
    twin.tx("finish", "no-such-invitation", status="sent", attempts=1, smtp_code=250,
            automation_id="no-such-automation")


def test_driver_errors_surface_as_sqlalchemys(twin: Twin) -> None:
    """A unique-constraint race reaches the caller as SQLAlchemy's IntegrityError (the
    notifier looks again), without the address in its message (`Twin.tx` checks)."""
    snap = _survey()
    twin.fixed_token = "tok-same"
    try:
        assert twin.claim(invitation(snap, email="gus@example.com")).kind == "new"
        assert twin.claim(invitation(snap, email="hal@example.com")) is IntegrityError
    finally:
        twin.fixed_token = None


_EMAILS = st.sampled_from(["ann@example.com", "Ann@example.com", "bea@example.com"])
_VARIABLES = st.dictionaries(st.sampled_from(["name", "city", "age"]),
                             st.one_of(st.integers(-3, 3), st.sampled_from(["x", "Ü"])),
                             max_size=3)
_OFFSET = st.sampled_from([timedelta(0), timedelta(hours=-1), timedelta(days=-9),
                           timedelta(days=1)])
_CLAIM = st.tuples(st.just("claim"), st.integers(0, 3), _EMAILS, _VARIABLES, _OFFSET,
                   _OFFSET, st.sampled_from(["A", "B"]),
                   st.sampled_from(["", "suppress", "hold", "throttle"]))
_FINISH = st.tuples(st.just("finish"), st.integers(0, 3), st.sampled_from(["sent", "failed"]),
                    st.integers(1, 3))
_ADVANCE = st.tuples(st.just("advance"), st.sampled_from(
    [timedelta(seconds=1), LEASE + timedelta(seconds=1), timedelta(days=2), WEEK * 2]))
_RELEASE = st.tuples(st.just("release"), st.sampled_from(["A", "B"]))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(_CLAIM, _CLAIM, _FINISH, _ADVANCE, _RELEASE), max_size=12))
def test_random_sequences_agree(twin: Twin, steps: list[tuple[Any, ...]]) -> None:
    snap = _survey()
    ids = [invitation(snap)["invitation_id"] for _ in range(4)]
    hold = store.Hold("automation disabled", b"\x01req")
    throttle = store.Throttle(2, timedelta(days=2))
    for step in steps:
        if step[0] == "claim":
            _, i, email, variables, received, due, owner, mode = step
            req = invitation(snap, email=email, variables=variables, invitation_id=ids[i],
                             received_at=twin.now + received, due_at=twin.now + due)
            twin.claim(req, owner=owner,
                       suppress_reason="automation deleted" if mode == "suppress" else None,
                       hold=hold if mode == "hold" else None,
                       throttle=throttle if mode == "throttle" else None)
        elif step[0] == "finish":
            _, i, status, attempts = step
            twin.tx("finish", ids[i], status=status, attempts=attempts,
                    smtp_code=250 if status == "sent" else 550,
                    reason=None if status == "sent" else "smtp_permanent: 550",
                    automation_id=snap.id)
        elif step[0] == "advance":
            twin.advance(step[1])
        else:
            for db in twin.dbs.values():
                store.release_claims(db.sessions, step[1])
