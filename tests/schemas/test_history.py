"""Messages written with an earlier version of a schema are read by the codec, resolved into
the current version: the compacted config topic keeps snapshots written before a change, and a
service not yet upgraded keeps writing the old version during a rolling upgrade."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest

from automations.snapshot import AutomationSnapshot
from schemas import codec
from tests.schemas.test_codec import RECORDS
from tests.support.schema_history import committed_texts, missing


def _written_with(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """`record` as a service holding `schema` (an earlier version) writes it."""
    parsed = fastavro.parse_schema(schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return codec.MAGIC + codec.fingerprint_of(parsed) + buf.getvalue()


def _fits(schema: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The fields of `record` that `schema` has (an old writer knows no newer field)."""
    names = {f["name"] for f in schema["fields"]}
    return {k: v for k, v in record.items() if k in names}


def test_every_committed_version_is_in_the_history() -> None:
    todo = missing()
    assert not todo, (f"schemas/history lacks {sorted(p.name for p in todo)}: run "
                      "`python -m tests.support.schema_history` and commit what it writes")


@pytest.mark.parametrize("name", codec.NAMES)
def test_data_of_every_committed_version_decodes_into_the_current(name: str) -> None:
    current = {f["name"]: f for f in codec.load_schema_json(name)["fields"]}
    for commit, text in committed_texts(name):
        old = json.loads(text)
        for record in RECORDS[name]:
            if name == "InvitationOutcome" and record["status"] not in \
                    old["fields"][3]["type"]["symbols"]:
                continue  # a status that version cannot write
            written = _fits(old, record)
            got = codec.decode_as(name, _written_with(old, written))
            for field, value in written.items():
                assert got[field] == value, (name, commit, field)
            for field in set(current) - set(written):  # added since: its default
                assert got[field] == current[field]["default"], (name, commit, field)


def test_a_snapshot_from_before_the_invitation_rules_has_neither() -> None:
    versions = [json.loads(path.read_text())
                for path in codec.HISTORY_DIR.glob("AutomationSnapshot.*.avsc")]
    newer = {"throttle_days", "auth_mode"}  # fields of the issue-16 versions
    [old] = [v for v in versions if not newer & {f["name"] for f in v["fields"]}]
    record = _fits(old, RECORDS["AutomationSnapshot"][0])
    snap = AutomationSnapshot.from_record(
        codec.decode_as("AutomationSnapshot", _written_with(old, record)))
    assert snap.throttle_days == 0 and snap.send_window is None
    assert snap.id == record["id"] and snap.delay_days == record["delay_days"]


def test_an_unknown_future_status_reads_as_the_enum_default() -> None:
    # A reader with today's schema meeting a status added later (forward compatibility).
    future = codec.load_schema_json("InvitationOutcome")
    status = future["fields"][3]["type"]
    future["fields"][3]["type"] = {**status, "symbols": [*status["symbols"], "bounced"]}
    data = _written_with(future, {**RECORDS["InvitationOutcome"][0], "status": "bounced"})
    buf = io.BytesIO(data[codec.HEADER_LEN:])
    got = fastavro.schemaless_reader(buf, fastavro.parse_schema(future),
                                     codec.parsed("InvitationOutcome"))
    assert got["status"] == status["default"] == "suppressed"


def test_an_unknown_fingerprint_is_still_refused() -> None:
    data = codec.encode("InvitationOutcome", RECORDS["InvitationOutcome"][0])
    with pytest.raises(codec.CodecError, match="unknown schema fingerprint"):
        codec.decode(data[:2] + b"\x01" * 8 + data[10:])
