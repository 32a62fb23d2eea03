"""Avro single-object encoding of hookstream's events.

Every message is `C3 01` + the schema's CRC-64-AVRO fingerprint (8 bytes, little endian)
+ the Avro binary body, as the Avro specification defines it, so any Avro library that has
the `.avsc` files in this folder can decode it. Parsed schemas are cached at import.

Earlier versions of each schema are kept in `history/` as `<Name>.<fingerprint>.avsc`: a
message written with one of them (by a process not yet upgraded, or before a compaction) is
read with Avro schema resolution into the current version, so a backward-compatible change
is one at run time too (`tests/schemas/test_compat.py` checks every committed version is
either current or kept there).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint

SCHEMA_DIR = Path(__file__).parent
HISTORY_DIR = SCHEMA_DIR / "history"
MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8
NAMES = ("AutomationSnapshot", "InvitationRequested", "InvitationOutcome", "AutomationError",
         "AutomationCounts")


class CodecError(ValueError):
    """A message that is not a hookstream Avro single-object encoding we know."""


def load_schema_json(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())


@cache
def parsed(name: str) -> dict[str, Any]:
    if name not in NAMES:
        raise CodecError(f"unknown schema {name!r}; known: {', '.join(NAMES)}")
    return fastavro.parse_schema(load_schema_json(name))


@cache
def fingerprint(name: str) -> bytes:
    """The current schema's CRC-64-AVRO fingerprint of its Parsing Canonical Form."""
    return fingerprint_of(parsed(name))


def fingerprint_of(schema: dict[str, Any] | list[Any] | str) -> bytes:
    """The CRC-64-AVRO fingerprint (little endian) of any parsed schema."""
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    # fastavro already returns the hex of the little-endian bytes (e.g. "int" ->
    # 8f5c393f1ad57572 for the value 0x7275d51a3f395c8f): take the bytes as they are.
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


@cache
def _by_fingerprint() -> dict[bytes, str]:
    return {fingerprint(n): n for n in NAMES}


@cache
def _earlier() -> dict[bytes, tuple[str, dict[str, Any]]]:
    """Fingerprint -> (name, parsed writer schema) of every kept earlier version."""
    out: dict[bytes, tuple[str, dict[str, Any]]] = {}
    for path in sorted(HISTORY_DIR.glob("*.avsc")):
        name, _, hexfp = path.stem.partition(".")
        if name in NAMES:
            out[bytes.fromhex(hexfp)] = (name, fastavro.parse_schema(json.loads(
                path.read_text())))
    return out


def encode(name: str, record: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(fingerprint(name))
    try:
        fastavro.schemaless_writer(buf, parsed(name), dict(record))
    except (TypeError, ValueError, KeyError) as exc:
        raise CodecError(f"cannot encode a {name}: {exc}") from exc
    return buf.getvalue()


def _writer(data: bytes) -> tuple[str, dict[str, Any] | None]:
    """(name, writer schema when it is an earlier version, else None) of a message."""
    if len(data) < HEADER_LEN or data[:2] != MAGIC:
        raise CodecError("not Avro single-object encoding: the message does not start with C3 01")
    fp = bytes(data[2:HEADER_LEN])
    name = _by_fingerprint().get(fp)
    if name is not None:
        return name, None
    earlier = _earlier().get(fp)
    if earlier is not None:
        return earlier
    raise CodecError(f"unknown schema fingerprint {fp.hex()}: written with a schema this "
                     "version of hookstream does not know")


def schema_of(data: bytes) -> str:
    """The name of the schema a message was written with (the current or an earlier version)."""
    return _writer(data)[0]


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """(schema name, record) of a message; one written with an earlier version of the schema
    is resolved into the current one (fields added since get their defaults)."""
    name, earlier = _writer(data)
    body = io.BytesIO(data[HEADER_LEN:])
    try:
        if earlier is None:
            record = fastavro.schemaless_reader(body, parsed(name), None)
        else:
            record = fastavro.schemaless_reader(body, earlier, parsed(name))
    except (EOFError, IndexError, ValueError, OverflowError) as exc:  # truncated or corrupt body
        raise CodecError(f"corrupt {name} message: the Avro body does not decode ({exc})") from exc
    if body.tell() != len(data) - HEADER_LEN:
        # Extra bytes mean the body was not written with this schema: refuse, do not guess.
        raise CodecError(f"corrupt {name} message: {len(data) - HEADER_LEN - body.tell()} "
                         "trailing bytes after the Avro body")
    return name, record


def decode_as(name: str, data: bytes) -> dict[str, Any]:
    """Decode a message that must have been written with schema `name`."""
    got, record = decode(data)
    if got != name:
        raise CodecError(f"expected a {name} message, got {got}")
    return record
