"""schemathesis against the served ingress's own OpenAPI document: no input gives a 5xx
(503 aside, which is the documented answer when Kafka or the configuration is not there)."""

from __future__ import annotations

import asyncio
import time

import schemathesis
from hypothesis import HealthCheck, given, settings

from automations.snapshot import ApiKeyHash
from core.kafka.topics import Topics, ensure_topics
from tests.ingress.conftest import ServedIngress, make_snapshot, new_key, publish_snapshots, sha


async def test_no_server_errors(kafka_bootstrap: str, topics: Topics,
                                served: ServedIngress) -> None:
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    await asyncio.to_thread(served.start)
    await asyncio.to_thread(run_schemathesis, served.base_url, snap.id, key)


def run_schemathesis(base_url: str, automation_id: str, key: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    seen: dict[int, int] = {}
    past_auth: set[str] = set()  # media types of bodies the automation's key got past auth
    started = time.monotonic()
    for path in ("/v1/hooks/{automation_id}", "/v1/hooks/{automation_id}/test", "/healthz",
                 "/readyz", "/openapi.json", "/metrics"):
        method = "POST" if path.startswith("/v1/") else "GET"
        operation = schema[path][method]
        on_hooks = path.startswith("/v1/")

        @settings(max_examples=60, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:  # noqa: ANN001 - a schemathesis Case
            if on_hooks and sum(seen.values()) % 2 == 0:  # noqa: B023 - run in this loop turn
                # Half the cases on the real automation with its key, to get past auth.
                case.path_parameters = {"automation_id": automation_id}
                case.headers = {**(case.headers or {}), "X-API-Key": key}
            response = case.call(base_url=base_url, timeout=10)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            got_in = on_hooks and response.status_code in (200, 202, 400, 415)  # noqa: B023
            if got_in and case.media_type:
                past_auth.add(case.media_type)
            assert response.status_code < 500 or response.status_code == 503, (
                case.method, case.formatted_path, response.status_code, response.text[:300])
            if response.status_code == 503:
                assert response.json()["error"] in ("kafka_unavailable", "not_ready")

        check()
    assert time.monotonic() - started < 60
    assert seen.get(202, 0) > 0 and seen.get(200, 0) > 0, seen  # it did get past auth
    assert sum(v for k, v in seen.items() if 400 <= k < 500) > 0, seen
    # Form bodies too were generated and read (not only refused at the key check).
    assert {"application/x-www-form-urlencoded", "multipart/form-data"} <= past_auth, past_auth
