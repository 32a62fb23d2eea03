"""A fast writer for the one message the stream emits per record: `InvitationRequested`.

fastavro's generic `schemaless_writer` costs about 20 us a call here, as much as the whole
engine; this writer knows the schema's fixed field order and writes the same bytes (Avro
single-object encoding, as `schemas.codec.encode`) in a third of that. The byte-for-byte
equality with `schemas.codec.encode` is a property test (tests/streams/test_fast_avro.py);
anything it does not expect falls back to the codec.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from schemas import codec

_PREFIX = codec.MAGIC + codec.fingerprint("InvitationRequested")
_DOUBLE = struct.Struct("<d").pack
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_FIELDS = ("invitation_id", "automation_id", "automation_version", "survey_id", "event_id",
           "record_index", "email", "variables", "received_at", "due_at", "delay_days")


_SMALL: Final = tuple(bytes((n << 1,)) for n in range(64))  # 0..63 as one zigzag byte


def _long(n: int) -> bytes:
    if 0 <= n < 64:
        return _SMALL[n]  # the usual small count or index: one byte
    return _varint(n)


# Timestamps repeat: due_at is received_at when there is no delay, and at thousands of
# records a second many share their millisecond. The loop below costs ~2 us; a hit 0.2.
@functools.lru_cache(maxsize=1024, typed=True)  # typed: 64.0 is not the long 64
def _varint(n: int) -> bytes:
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError("out of the Avro long range")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _string(s: str) -> bytes:
    b = s.encode()
    n = len(b)
    return (_SMALL[n] if n < 64 else _long(n)) + b


_KEYS: dict[str, bytes] = {}  # variable names as Avro strings: the same few on every record


def _key(name: str) -> bytes:
    b = _KEYS.get(name)
    if b is None:
        b = _string(name)
        if len(_KEYS) < 4096:
            _KEYS[name] = b
    return b


def _millis(v: int | datetime) -> int:
    if isinstance(v, datetime):
        return int(v.timestamp() * 1000)  # only ints come from the stream; codec semantics
    return v


def invitation_static(automation_id: str, automation_version: int, survey_id: str) -> bytes:
    """The fields that are the same for every invitation of one automation snapshot, encoded
    once; pass it to `encode_invitation_fields`."""
    return _string(automation_id) + _long(automation_version) + _string(survey_id)


def encode_invitation_fields(invitation_id: str, static: bytes, event_id: str,
                             record_index: int, email: str, variables: Mapping[str, Any],
                             received_at: int, due_at: int, delay_days: int) -> bytes:
    """The InvitationRequested bytes from its fields (`static` from `invitation_static`).
    Variable values must be None/bool/int/float/str (TypeError otherwise); the caller
    falls back to `encode_invitation` / the codec."""
    # `_string` and `_long` inlined for the per-record strings and small numbers (a call
    # costs as much as the encoding): the same bytes, a property test says so.
    small = _SMALL
    b = invitation_id.encode()
    n = len(b)
    parts = [_PREFIX, small[n] if n < 64 else _varint(n), b, static]
    b = event_id.encode()
    n = len(b)
    parts += (small[n] if n < 64 else _varint(n), b,
              small[record_index] if 0 <= record_index < 64 else _varint(record_index))
    b = email.encode()
    n = len(b)
    parts += (small[n] if n < 64 else _varint(n), b)
    if variables:
        n = len(variables)
        parts.append(small[n] if n < 64 else _varint(n))
        keys = _KEYS
        for key, value in variables.items():
            k = keys.get(key)
            parts.append(k if k is not None else _key(key))
            t = type(value)
            if t is str:
                b = value.encode()
                n = len(b)
                parts += (b"\x08", small[n] if n < 64 else _varint(n), b)
            elif t is int:
                parts += (b"\x04", small[value] if 0 <= value < 64 else _varint(value))
            elif t is bool:
                parts.append(b"\x02\x01" if value else b"\x02\x00")
            elif t is float:
                parts += (b"\x06", _DOUBLE(value))
            elif value is None:
                parts.append(b"\x00")
            else:
                raise TypeError(t)
    parts += (b"\x00", _long(received_at), _long(due_at), _long(delay_days))
    return b"".join(parts)


def encode_invitation(rec: Mapping[str, Any]) -> bytes:
    """`schemas.codec.encode("InvitationRequested", rec)`, faster."""
    try:
        if len(rec) != len(_FIELDS):
            raise KeyError("unexpected fields")
        return encode_invitation_fields(
            rec["invitation_id"],
            invitation_static(rec["automation_id"], rec["automation_version"],
                              rec["survey_id"]),
            rec["event_id"], rec["record_index"], rec["email"], rec["variables"],
            _millis(rec["received_at"]), _millis(rec["due_at"]), rec["delay_days"])
    except (KeyError, TypeError, OverflowError, AttributeError):
        return codec.encode("InvitationRequested", rec)  # the codec explains what is wrong
