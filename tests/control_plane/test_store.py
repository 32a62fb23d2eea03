"""The SQL store on SQLite and PostgreSQL: migrations, the version counter, key handling."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select

from automations import keys
from automations.snapshot import ApiKeyHash, AutomationSnapshot
from control_plane import api_models as m
from control_plane import service
from control_plane.errors import Conflict, Invalid
from control_plane.migrations import migrate as migrate_control_plane
from control_plane.store.models import ApiKey, Base, MappingRow
from control_plane.store.unit import Store
from core.sql import make_engine
from notifier.migrations import migrate as migrate_notifier
from notifier.models import AutomationErrorRow
from notifier.models import Base as NotifierBase
from schemas import codec

NOW = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)


def _seed(store: Store) -> str:
    def work(s):  # noqa: ANN001, ANN202
        survey = service.create_survey(s, m.SurveyIn(name="S", variables=[
            m.VariableIn(name="city", type="text"),
            m.VariableIn(name="plan", type="choice", options=["a", "b"])]), NOW)
        msg = service.create_message(s, m.MessageIn(name="M", subject="Hi {{ city }}",
                                                    body="{{ survey_link }}"), NOW)
        a, _, _ = service.create_automation(s, m.AutomationIn(
            name="A", survey_id=survey.id, message_id=msg.id, email_field="email",
            fields=m.FieldsIn(mode="exclude", paths=[]),
            mapping=[m.MappingIn(field="city", variable="city"),
                     m.MappingIn(field="id", variable=None)]), NOW)
        return a.id
    return store.run(work)


def migrate(url: str) -> None:
    """Both owners' tables: the admin API reads the errors the notifier writes."""
    migrate_control_plane(url)
    migrate_notifier(url)


def test_migrations_build_the_models_schema(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)  # idempotent
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert {"surveys", "variables", "messages", "automations", "mappings", "api_keys",
                    "alembic_version_control_plane", "automation_errors", "invitations",
                    "alembic_version_notifier"} <= tables
            # Each owner's migrations and models describe the same schema (its own tables).
            for metadata, version_table in ((Base.metadata, "alembic_version_control_plane"),
                                            (NotifierBase.metadata, "alembic_version_notifier")):
                ctx = MigrationContext.configure(conn, opts={
                    "version_table": version_table,
                    "include_name": lambda name, kind, _p, md=metadata: (
                        kind != "table" or name in md.tables)})
                assert compare_metadata(ctx, metadata) == []
    finally:
        engine.dispose()


def test_version_counter_times_and_cascade(db_url: str) -> None:
    migrate(db_url)
    store = Store(db_url)
    try:
        aid = _seed(store)
        a = store.run(lambda s: service.get_automation(s, aid))
        assert a.version == 1 and a.created_at == NOW  # aware UTC, microseconds kept

        # Replacing the mapping with the same field names (a unique pair) works.
        patch = m.AutomationPatch(mapping=[m.MappingIn(field="city", variable="city")],
                                  delay_days=3)
        later = NOW + timedelta(minutes=1)
        a, changes = store.run(lambda s: service.update_automation(s, aid, patch, later))
        assert a.version == 2 and changes.publish[0].version == 2
        assert changes.publish[0].updated_at == later

        # A survey change bumps the version of its automations.
        sid = a.survey_id
        _, changes = store.run(lambda s: service.add_variable(
            s, sid, m.VariableIn(name="extra", type="number"), later))
        assert [c.version for c in changes.publish] == [3]

        # A failing save rolls back entirely: no version bump.
        bad = m.AutomationPatch(mapping=[m.MappingIn(field="city", variable="nope")])
        with pytest.raises(Invalid) as err:
            store.run(lambda s: service.update_automation(s, aid, bad, later))
        assert err.value.problems[0].field == "mapping[0].variable"
        assert store.run(lambda s: service.get_automation(s, aid)).version == 3

        # Deleting a mapped variable is a conflict.
        with pytest.raises(Conflict):
            store.run(lambda s: service.delete_variable(s, sid, "city", later))

        store.run(lambda s: service.delete_automation(s, aid))
        counts = store.run(lambda s: (s.scalar(select(func.count()).select_from(ApiKey)),
                                      s.scalar(select(func.count()).select_from(MappingRow))))
        assert counts == (0, 0)
    finally:
        store.dispose()


def test_rotation_grace_and_snapshot_encoding(db_url: str) -> None:
    migrate(db_url)
    store = Store(db_url)
    try:
        aid = _seed(store)
        _, key1, expiry, _ = store.run(lambda s: service.rotate_key(s, aid, 60, NOW))
        assert expiry == NOW + timedelta(seconds=60)
        snap = store.run(lambda s: service.all_snapshots(s))[0]
        assert len(snap.api_keys) == 2
        assert keys.verify(key1, keys.stored(snap.api_keys), NOW.timestamp())
        # A later rotation drops keys already expired, keeps the one in grace.
        t2 = NOW + timedelta(seconds=120)
        _, key2, _, changes = store.run(lambda s: service.rotate_key(s, aid, 60, t2))
        snap = changes.publish[0]
        assert len(snap.api_keys) == 2  # key1 (in grace until t2+60) and key2
        assert keys.verify(key2, keys.stored(snap.api_keys), t2.timestamp())
        assert keys.verify(key1, keys.stored(snap.api_keys), t2.timestamp())
        assert not keys.verify(key1, keys.stored(snap.api_keys),
                               (t2 + timedelta(seconds=61)).timestamp())
        # The snapshot round-trips through the Avro codec.
        back = AutomationSnapshot.from_record(codec.decode_as(
            "AutomationSnapshot", codec.encode("AutomationSnapshot", snap.to_record())))
        assert (back.id, back.version, back.mapping, back.api_keys[0].sha256) == (
            snap.id, snap.version, snap.mapping, snap.api_keys[0].sha256)
    finally:
        store.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_errors_listed_newest_first(db_url: str) -> None:
    migrate(db_url)
    store = Store(db_url)
    try:
        aid = _seed(store)

        def add(s):  # noqa: ANN001, ANN202
            for i in range(3):
                s.add(AutomationErrorRow(id=f"e{i}", automation_id=aid, kind="invalid_email",
                                         detail="d", source="streams", field="email",
                                         at=NOW + timedelta(seconds=i)))
        store.run(add)
        rows = store.run(lambda s: service.list_errors(s, aid, 2))
        assert [r.id for r in rows] == ["e2", "e1"]
    finally:
        store.dispose()


def test_key_hash_contract() -> None:
    key = keys.generate()
    assert len(key) >= 43 and key != keys.generate()
    assert keys.hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    live = keys.stored([ApiKeyHash(keys.hash_key(key))])
    assert keys.verify(key, live) and not keys.verify(key + "x", live)
    expired = keys.stored([ApiKeyHash(keys.hash_key(key), NOW)])
    assert not keys.verify(key, expired, NOW.timestamp())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_concurrent_writer_gets_a_conflict(db_url: str) -> None:
    migrate(db_url)
    store = Store(db_url)
    try:
        aid = _seed(store)
        stale = store.run(lambda s: service.get_automation(s, aid))  # version 1, detached
        store.run(lambda s: service.set_enabled(s, aid, False, "x", NOW))  # now version 2

        def write_stale(s):  # noqa: ANN001, ANN202
            a = s.merge(stale, load=False)  # a writer still holding version 1
            a.version += 1
            a.name = "lost update"
        with pytest.raises(Conflict):
            store.run(write_stale)
        assert store.run(lambda s: service.get_automation(s, aid)).name == "A"
    finally:
        store.dispose()
