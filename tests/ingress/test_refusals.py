"""The ingress's refusal counts: what is counted, and that a count Kafka did not take stays."""

from __future__ import annotations

from automations.config_cache import ConfigCache
from ingress.errors import HttpError
from ingress.refusals import Refusals, kind_of, refusal_detail
from schemas import codec
from tests.ingress.conftest import make_snapshot


def cache_with(*automation_ids: str) -> ConfigCache:
    cache = ConfigCache("127.0.0.1:1", "unused")
    for aid in automation_ids:  # as the config topic would deliver them
        cache._apply(aid.encode(), codec.encode("AutomationSnapshot",
                                                make_snapshot(aid, keys=[]).to_record()))
    return cache


def test_counts_the_integrators_errors_of_existing_automations_only() -> None:
    r = Refusals(cache_with("a1"), "127.0.0.1:1", "errors", 60)
    for code in ("invalid_api_key", "invalid_api_key", "bad_json", "automation_disabled",
                 "body_too_large", "unsupported_media_type", "rate_limited",
                 "invalid_signature"):
        r.count("a1", HttpError(code))
    r.count("a1", HttpError("kafka_unavailable"))  # 503: ours, not the integrator's
    r.count("a1", HttpError("not_ready"))
    r.count("gone", HttpError("invalid_api_key"))  # names no automation: not counted
    assert r.pending() == {("a1", "invalid_api_key"): 2, ("a1", "bad_json"): 1,
                           ("a1", "automation_disabled"): 1, ("a1", "body_too_large"): 1,
                           ("a1", "unsupported_media_type"): 1, ("a1", "rate_limited"): 1,
                           ("a1", "invalid_signature"): 1}
    r.forget("a1")
    assert r.pending() == {}


async def test_a_count_kafka_did_not_take_stays_for_the_next_interval() -> None:
    r = Refusals(cache_with("a1"), "127.0.0.1:1", "errors", 60)  # nothing listens there
    r.count("a1", HttpError("bad_json"))
    assert await r.flush() == 0
    r.count("a1", HttpError("bad_json"))
    assert r.pending() == {("a1", "bad_json"): 2}
    await r.stop()


def test_the_detail_names_the_code_and_interval_without_data() -> None:
    detail = refusal_detail("invalid_api_key", 41, 1_764_410_000_000, 1_764_410_060_000)
    assert detail.startswith("41 webhook requests were refused with 401 invalid_api_key "
                             "between 2025-11-29 09:53:20 UTC and 2025-11-29 09:54:20 UTC: ")
    assert kind_of("bad_json") == "refused_bad_json"
