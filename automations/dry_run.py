"""The dry run: what an automation would do with a sample body, shown in full.

Unlike the stream (`engine.py`), it shows values (the integrator's own sample) and lists a
record's errors even when the filters drop it, so one call answers every question at once.
"""

from __future__ import annotations

from typing import Any

from automations.engine import CompiledAutomation, RecordError, compile_automation, not_object
from automations.paths import flatten
from automations.snapshot import AutomationSnapshot


def dry_run_record(compiled: CompiledAutomation, record: Any, index: int) -> dict[str, Any]:
    """Everything the automation sees and decides for one record, with values."""
    if type(record) is not dict:
        return {"index": index, "outcome": "rejected", "fields_found": [],
                "fields_taken_in": [], "filters": {"passed": False, "failed": None},
                "email": None, "variables": {}, "errors": [not_object(record).to_dict()]}
    taken = compiled.take_in(record)
    verdict = compiled.filter(taken)
    errors: list[RecordError] = []
    email = compiled.read_email(taken, errors)
    variables = compiled.read_variables(taken, errors)
    outcome = ("filtered_out" if not verdict.passed
               else "rejected" if errors else "accepted")
    return {"index": index, "outcome": outcome,
            "fields_found": list(flatten(record)),
            "fields_taken_in": list(flatten(taken)),
            "filters": {"passed": verdict.passed, "failed": verdict.failed},
            "email": email, "variables": variables,
            "errors": [e.to_dict() for e in errors]}


def dry_run(snapshot: AutomationSnapshot, records: list[Any]) -> dict[str, Any]:
    """The dry run of `records` (from `parse_body`): JSON-serializable."""
    compiled = compile_automation(snapshot)
    results = [dry_run_record(compiled, r, i) for i, r in enumerate(records)]
    summary = {"records": len(results), "accepted": 0, "filtered_out": 0, "rejected": 0}
    for r in results:
        summary[r["outcome"]] += 1
    return {"automation_id": snapshot.id, "version": snapshot.version,
            "configuration_problems": list(compiled.problems),
            "summary": summary, "records": results}
