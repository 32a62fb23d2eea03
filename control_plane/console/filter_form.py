"""The filter builder's model: a tree of groups (all/any/not) and conditions, edited by plain
forms, converted to and from the filter JSON the engine reads (`automations/filters.py`).

The form posts every node in preorder as `n{i}.kind`, `n{i}.parent` and, for a condition,
`n{i}.field`, `n{i}.op`, `n{i}.vtype`, `n{i}.value`, `n{i}.case`; a submit button named
`action` says what to do (`add-cond:{i}`, `add-group:{i}:{all|any|not}`, `remove:{i}`).
The value input fits the operator: none for exists/empty, a list (one per line) for in/not_in,
a number, date or text for the comparisons, true/false for a boolean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from automations.filters import OPERATORS, as_temporal

GROUPS = ("all", "any", "not")
NO_VALUE = ("exists", "not_exists", "empty", "not_empty")
LIST_OPS = ("in", "not_in")
ORDER_OPS = ("gt", "gte", "lt", "lte")
TEXT_OPS = ("contains", "starts_with", "ends_with", "regex")
OP_LABELS = {
    "eq": "is", "ne": "is not", "in": "is one of", "not_in": "is none of",
    "contains": "contains", "starts_with": "starts with", "ends_with": "ends with",
    "regex": "matches the pattern", "gt": "is greater than", "gte": "is at least",
    "lt": "is less than", "lte": "is at most", "exists": "is present",
    "not_exists": "is absent", "empty": "is empty", "not_empty": "is not empty",
}
VTYPES = {"text": "text", "number": "number", "date": "date", "boolean": "true/false",
          "null": "null"}
assert set(OP_LABELS) == set(OPERATORS)

Node = dict[str, Any]


def vtypes_for(op: str) -> list[str]:
    """The value types an operator takes (the first is the default)."""
    if op in NO_VALUE:
        return []
    if op in ("eq", "ne"):
        return ["text", "number", "date", "boolean", "null"]
    if op in LIST_OPS:
        return ["text", "number"]
    if op in ORDER_OPS:
        return ["number", "date", "text"]
    if op == "contains":
        return ["text", "number"]
    return ["text"]


def empty_root() -> Node:
    return {"kind": "all", "children": []}


def new_condition() -> Node:
    return {"kind": "cond", "field": "", "op": "eq", "vtype": "text", "value": "",
            "case": False}


# --- JSON -> model ---------------------------------------------------------------------------
def _vtype_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str) and as_temporal(v) is not None:
        return "date"
    return "text"


def _text_of(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def from_json(tree: Any) -> Node:
    """The builder's model of a stored filter (the root is always an all/any group)."""
    if not tree:
        return empty_root()
    node = _from_json(tree)
    if node["kind"] in ("all", "any"):
        return node
    return {"kind": "all", "children": [node]}


def _from_json(t: Mapping[str, Any]) -> Node:
    for g in ("all", "any"):
        if g in t:
            return {"kind": g, "children": [_from_json(c) for c in t[g]]}
    if "not" in t:
        return {"kind": "not", "children": [_from_json(t["not"])]}
    op = t.get("op", "eq")
    value = t.get("value")
    if op in LIST_OPS and isinstance(value, list):
        vtype = _vtype_of(value[0]) if value else "text"
        text = "\n".join(_text_of(v) for v in value)
    else:
        vtype = _vtype_of(value) if op not in NO_VALUE else "text"
        text = _text_of(value)
    if vtype not in vtypes_for(op):
        vtype = (vtypes_for(op) or ["text"])[0]
    return {"kind": "cond", "field": t.get("field", ""), "op": op, "vtype": vtype,
            "value": text, "case": bool(t.get("case_sensitive"))}


# --- model -> JSON ---------------------------------------------------------------------------
class BuildError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _convert(text: str, vtype: str, where: str, problems: list[str]) -> Any:
    text = text.strip()
    if vtype == "null":
        return None
    if vtype == "boolean":
        if text.lower() not in ("true", "false"):
            problems.append(f"{where}: choose true or false")
        return text.lower() == "true"
    if vtype == "number":
        try:
            n = float(text.replace(",", "."))
        except ValueError:
            problems.append(f"{where}: '{text}' is not a number")
            return None
        if not math.isfinite(n):
            problems.append(f"{where}: the number must be finite")
            return None
        return int(n) if n.is_integer() and "." not in text and "e" not in text.lower() else n
    if vtype == "date" and text and as_temporal(text) is None:
        problems.append(f"{where}: '{text}' is not a date (YYYY-MM-DD)")
    return text


def to_json(root: Node) -> dict[str, Any] | None:
    """The filter JSON (None: no conditions, every record passes); BuildError lists what is
    missing or malformed, each naming the condition by its number in the form."""
    problems: list[str] = []
    counter = [0]
    tree = _to_json(root, problems, counter)
    if problems:
        raise BuildError(problems)
    if tree is None or (isinstance(tree, dict) and tree.get("all") == []):
        return None
    return tree


def _to_json(node: Node, problems: list[str], counter: list[int]) -> dict[str, Any] | None:
    kind = node["kind"]
    if kind in ("all", "any"):
        children = [c for c in (_to_json(x, problems, counter) for x in node["children"])
                    if c is not None]
        if kind == "any" and not children:
            return None  # an empty "any" never holds: leave it out rather than block all
        return {kind: children}
    if kind == "not":
        inner = [c for c in (_to_json(x, problems, counter) for x in node["children"])
                 if c is not None]
        if not inner:
            return None
        return {"not": inner[0] if len(inner) == 1 else {"all": inner}}
    counter[0] += 1
    where = f"condition {counter[0]}"
    field = str(node.get("field", "")).strip()
    op = node.get("op", "eq")
    if not field:
        problems.append(f"{where}: name the field")
    if op not in OPERATORS:
        problems.append(f"{where}: choose an operator")
        return None
    cond: dict[str, Any] = {"field": field, "op": op}
    if op not in NO_VALUE:
        vtype = node.get("vtype") or "text"
        raw = str(node.get("value", ""))
        if op in LIST_OPS:
            items = [line for line in raw.splitlines() if line.strip()]
            if not items:
                problems.append(f"{where}: give at least one value, one per line")
            cond["value"] = [_convert(x, vtype, where, problems) for x in items]
        else:
            if vtype not in ("null", "boolean") and not raw.strip() and op != "eq":
                problems.append(f"{where}: give a value")
            cond["value"] = _convert(raw, vtype, where, problems)
    if node.get("case") and op not in NO_VALUE and op not in ORDER_OPS:
        cond["case_sensitive"] = True
    return cond


# --- the form ----------------------------------------------------------------------------------
def flatten_nodes(root: Node) -> list[tuple[int, int | None, Node]]:
    """(index, parent index, node) in preorder: the numbering the form uses."""
    out: list[tuple[int, int | None, Node]] = []

    def walk(node: Node, parent: int | None) -> None:
        i = len(out)
        out.append((i, parent, node))
        for child in node.get("children", ()):
            walk(child, i)

    walk(root, None)
    return out


def from_form(form: Mapping[str, str]) -> Node:
    """The tree the form posted (nodes in preorder, each naming its parent)."""
    nodes: list[Node] = []
    i = 0
    while f"n{i}.kind" in form:
        kind = form[f"n{i}.kind"]
        if kind in GROUPS:
            node: Node = {"kind": kind, "children": []}
        else:
            op = form.get(f"n{i}.op", "eq")
            op = op if op in OPERATORS else "eq"
            vtype = form.get(f"n{i}.vtype", "")
            if vtype not in vtypes_for(op):
                vtype = (vtypes_for(op) or ["text"])[0]
            node = {"kind": "cond", "field": form.get(f"n{i}.field", ""), "op": op,
                    "vtype": vtype, "value": form.get(f"n{i}.value", ""),
                    "case": form.get(f"n{i}.case") == "on"}
        parent = form.get(f"n{i}.parent", "")
        if i > 0 and parent.isdigit() and int(parent) < i:
            p = nodes[int(parent)]
            if p["kind"] in GROUPS:
                p["children"].append(node)
        nodes.append(node)
        i += 1
    if not nodes or nodes[0]["kind"] not in ("all", "any"):
        return empty_root()
    return nodes[0]


def apply_action(root: Node, action: str) -> Node:
    """Add a condition or group under node i, or remove node i (never the root)."""
    flat = flatten_nodes(root)
    parts = action.split(":")
    try:
        index = int(parts[1])
    except (IndexError, ValueError):
        return root
    if not 0 <= index < len(flat):
        return root
    target = flat[index][2]
    if parts[0] == "add-cond" and target["kind"] in GROUPS:
        if target["kind"] != "not" or not target["children"]:
            target["children"].append(new_condition())
    elif parts[0] == "add-group" and target["kind"] in GROUPS and len(parts) > 2 \
            and parts[2] in GROUPS:
        if target["kind"] != "not" or not target["children"]:
            target["children"].append({"kind": parts[2], "children": [new_condition()]})
    elif parts[0] == "remove" and index > 0:
        parent = flat[flat[index][1] or 0][2]
        parent["children"] = [c for c in parent["children"] if c is not target]
    return root
