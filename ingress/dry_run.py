"""`POST /v1/hooks/{automation_id}/test`: the connection check and the dry run.

The same checks as the webhook (`Endpoint`), except that a disabled automation may be tested.
Without a body it says the key works; with one it runs the automation's filters and mapping
on the sample and reports every record's fate. It never publishes to the pipeline; the
console's sample feed gets a copy.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from automations.bodies import BodyError, parse_body
from automations.dry_run import dry_run
from ingress.endpoint import Endpoint, Head, body_error, respond
from ingress.errors import HttpError
from ingress.ratelimit import RateLimiter
from ingress.samples import SampleFeed


class DryRun(Endpoint):
    """Each authenticated sample, with its answer, also goes to the console's sample feed
    (after the client has its answer; best effort), so the connection-test step shows it."""

    route = "/v1/hooks/{automation_id}/test"

    def __init__(self, *, samples: SampleFeed | None = None, limiter: RateLimiter | None = None,
                 max_records: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.samples = samples
        # Its own bucket per automation: a dry run costs the ingress's loop the automation's
        # whole engine per record, so it is bounded apart from (and far below) the webhook.
        self.limiter = limiter
        self.max_records = max_records

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        automation_id: str = scope["path_params"]["automation_id"]
        seen: list[tuple[Head, bytes]] = []  # set once the key opened the automation
        try:
            answer = await self.answer(scope, receive, automation_id, seen)
        except HttpError as err:
            await self.error(send, self.label(automation_id), err)
            if seen and self.samples is not None:
                head, body = seen[0]
                await self.samples.publish(automation_id, head.content_type_str, body,
                                           err.status, {"error": err.code, "detail": err.detail})
            return
        await respond(send, 200, orjson.dumps(answer, default=str))
        self.metrics.request(self.route, 200)
        if seen and self.samples is not None:
            head, body = seen[0]
            await self.samples.publish(automation_id, head.content_type_str, body, 200, answer)

    async def answer(self, scope: Scope, receive: Receive, automation_id: str,
                     seen: list[tuple[Head, bytes]]) -> dict[str, Any]:
        head = self.authenticate(scope, automation_id, require_enabled=False)
        body = await self.read_body(receive, head)
        snapshot = head.snapshot
        assert snapshot is not None
        self.check_signature(head, body)  # a signed automation's test is signed too
        if self.limiter is not None:  # after the proof of the sender, before any work
            wait = self.limiter.take(automation_id)  # this process's bucket: see __init__
            if wait:
                raise HttpError("rate_limited", "Too many dry runs for this automation; retry "
                                "after the number of seconds in Retry-After.", retry_after=wait)
        seen.append((head, body))
        answer: dict[str, Any] = {
            "ok": True,
            "automation": {"id": snapshot.id, "name": snapshot.name,
                           "enabled": snapshot.enabled, "survey": snapshot.survey_name},
        }
        if body.strip():
            try:
                records = parse_body(body, head.content_type_str, max_depth=self.max_depth)
            except BodyError as exc:
                raise body_error(exc) from None
            if len(records) > self.max_records:
                raise HttpError("too_many_records", f"The sample holds {len(records)} records; "
                                f"a dry run takes at most {self.max_records}.")
            answer["dry_run"] = dry_run(snapshot, records)
            answer["published"] = False
        else:
            opened_by = {"key": "the key opens", "signature": "the signature opens",
                         "both": "the key and the signature open"}.get(snapshot.auth_mode,
                                                                      "the key opens")
            answer["detail"] = (f"The connection works: {opened_by} this automation. "
                                "Send a sample body to this address for a dry run.")
        return answer
