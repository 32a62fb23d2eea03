"""`POST /v1/hooks/{automation_id}/test`: the connection check and the dry run.

The same checks as the webhook (`Endpoint`), except that a disabled automation may be tested.
Without a body it says the key works; with one it runs the automation's filters and mapping
on the sample and reports every record's fate. It never publishes.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Receive, Scope

from automations.process import BodyError, dry_run, parse_body
from ingress.endpoint import Endpoint, body_error


class DryRun(Endpoint):
    route = "/v1/hooks/{automation_id}/test"

    async def handle(self, scope: Scope, receive: Receive,
                     automation_id: str) -> tuple[int, bytes]:
        head = self.authenticate(scope, automation_id, require_enabled=False)
        body = await self.read_body(receive, head)
        snapshot = head.snapshot
        assert snapshot is not None
        answer: dict[str, Any] = {
            "ok": True,
            "automation": {"id": snapshot.id, "name": snapshot.name,
                           "enabled": snapshot.enabled, "survey": snapshot.survey_name},
        }
        if body.strip():
            try:
                records = parse_body(body, head.content_type_str)
            except BodyError as exc:
                raise body_error(exc) from None
            answer["dry_run"] = dry_run(snapshot, records)
            answer["published"] = False
        else:
            answer["detail"] = ("The connection works: the key opens this automation. "
                                "Send a sample body to this address for a dry run.")
        return 200, orjson.dumps(answer, default=str)
