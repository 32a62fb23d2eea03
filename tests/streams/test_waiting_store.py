"""The scheduler's local store: due order, not arrival order; position kept with the rows."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.waiting_store import WaitingStore


def test_due_rows_come_by_due_time_not_by_arrival(tmp_path: Path) -> None:
    store = WaitingStore(tmp_path / "p0.sqlite")
    # A 30-day invitation stored first never holds back a 1-day one stored after it.
    store.put_many([("late", 30_000, b"L"), ("soon", 1_000, b"S"), ("mid", 5_000, b"M")], 3)
    assert store.next_due() == 1_000
    assert store.due(999, 10) == []
    assert [r[0] for r in store.due(5_000, 10)] == ["soon", "mid"]
    assert [r[0] for r in store.due(10**9, 1)] == ["soon"]
    store.delete_many(["soon"], 5)
    assert store.count() == 2 and store.next_offset == 5
    store.close()


def test_state_and_position_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "p1.sqlite"
    store = WaitingStore(path)
    store.put_many([("a", 10, b"1"), ("b", 20, b"2")], 7)
    store.apply([("a", 0, None), ("c", 15, b"3"), ("b", 25, b"2b")], 11)
    store.close()
    again = WaitingStore(path)
    assert again.next_offset == 11
    assert again.due(100, 10) == [("c", 15, b"3"), ("b", 25, b"2b")]
    again.reset()
    assert again.count() == 0 and again.next_offset == 0
    again.close()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 10**6), st.booleans()),
                max_size=60))
def test_store_matches_a_dict_model(tmp_path_factory, ops) -> None:
    """Any sequence of puts and deletes leaves what a plain dict would hold."""
    store = WaitingStore(tmp_path_factory.mktemp("s") / "p.sqlite")
    model: dict[str, int] = {}
    for offset, (key, due, delete) in enumerate(ops):
        inv = f"i{key}"
        if delete:
            store.apply([(inv, 0, None)], offset + 1)
            model.pop(inv, None)
        else:
            store.apply([(inv, due, b"v")], offset + 1)
            model[inv] = due
    rows = store.due(10**7, 1000)
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert {r[0]: r[1] for r in rows} == model
    store.close()
