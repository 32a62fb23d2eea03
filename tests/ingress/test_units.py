"""Pure parts: the key index and the rate limiter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from automations.snapshot import ApiKeyHash
from ingress.keys import KeyIndex
from ingress.ratelimit import RateLimiter, retry_after_header
from tests.ingress.conftest import make_snapshot, sha


def test_key_index_follows_snapshots() -> None:
    idx = KeyIndex()
    now = datetime.now(UTC)
    snap = make_snapshot("a", keys=[ApiKeyHash(sha("new")),
                                    ApiKeyHash(sha("old"), now + timedelta(seconds=10)),
                                    ApiKeyHash(sha("gone"), now - timedelta(seconds=1))])
    idx.update("a", snap)
    assert idx.check("a", "new") and idx.check("a", "old")
    assert not idx.check("a", "gone") and not idx.check("a", "other")
    assert not idx.check("b", "new")
    assert not idx.check("a", "old", now=(now + timedelta(seconds=11)).timestamp())
    idx.update("a", make_snapshot("a", keys=[ApiKeyHash(sha("newer"))]))
    assert idx.check("a", "newer") and not idx.check("a", "new")
    idx.update("a", None)
    assert not idx.check("a", "newer")


@given(st.floats(0.5, 1000), st.integers(1, 50), st.integers(1, 200))
def test_bucket_never_allows_more_than_burst_plus_rate(rate: float, burst: int, n: int) -> None:
    lim = RateLimiter(rate, burst)
    t = 0.0
    passed = 0
    for _ in range(n):
        t += 0.001
        if lim.take("a", t) == 0.0:
            passed += 1
    assert passed <= burst + rate * t + 1e-6
    assert passed >= min(n, burst)


def test_bucket_refills_and_says_when() -> None:
    lim = RateLimiter(2.0, 2)
    assert lim.take("a", 0.0) == 0.0 and lim.take("a", 0.0) == 0.0
    wait = lim.take("a", 0.0)
    assert 0.49 < wait <= 0.5
    assert retry_after_header(wait) == b"1"
    assert lim.take("a", 0.5) == 0.0
    assert lim.take("b", 0.0) == 0.0
