"""Independent implementations of two Avro specification algorithms, for the tests only.

Written from the specification ("Schema Fingerprints" and "Parsing Canonical Form for
Schemas"), not from fastavro or hookstream, so the codec can be checked against them.
"""

from __future__ import annotations

import json
from typing import Any

EMPTY = 0xC15D213AA4D7A795
MASK64 = (1 << 64) - 1


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            # Java: fp = (fp >>> 1) ^ (EMPTY & -(fp & 1L)); -(1) is all ones, -(0) is zero.
            fp = (fp >> 1) ^ (EMPTY if fp & 1 else 0)
        table.append(fp & MASK64)
    return table


FP_TABLE = _fp_table()


def crc64_avro(data: bytes) -> int:
    """The specification's reference `fingerprint64` as an unsigned 64-bit integer."""
    fp = EMPTY
    for byte in data:
        fp = (fp >> 8) ^ FP_TABLE[(fp ^ byte) & 0xFF]
    return fp & MASK64


PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
NAMED = {"record", "error", "enum", "fixed"}


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def canonical_form(schema: Any) -> str:
    """Parsing Canonical Form: [PRIMITIVES] [FULLNAMES] [STRIP] [ORDER] [STRINGS] [INTEGERS]
    [WHITESPACE]. A named type is written in full at its first occurrence, by name after."""
    seen: set[str] = set()

    def walk(s: Any, namespace: str | None) -> Any:
        if isinstance(s, str):
            if s in PRIMITIVES:
                return s
            return _fullname(s, namespace)  # a reference to a named type
        if isinstance(s, list):
            return [walk(branch, namespace) for branch in s]
        kind = s["type"]
        if kind in PRIMITIVES:
            return kind  # [PRIMITIVES]: {"type": "int", "logicalType": ...} -> "int"
        if kind == "array":
            return {"type": "array", "items": walk(s["items"], namespace)}
        if kind == "map":
            return {"type": "map", "values": walk(s["values"], namespace)}
        if kind not in NAMED:
            return walk(kind, namespace)  # {"type": "SomeNamedType"}
        full = _fullname(s["name"], s.get("namespace", namespace))
        if full in seen:
            return full
        seen.add(full)
        inner_ns = full.rpartition(".")[0] or None
        out: dict[str, Any] = {"name": full, "type": kind}
        if kind in ("record", "error"):
            out["fields"] = [{"name": f["name"], "type": walk(f["type"], inner_ns)}
                             for f in s["fields"]]
        elif kind == "enum":
            out["symbols"] = list(s["symbols"])
        else:
            out["size"] = int(s["size"])
        return out

    return json.dumps(walk(schema, None), separators=(",", ":"), ensure_ascii=False)
