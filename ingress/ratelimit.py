"""A token bucket per automation: `rate` requests per second, bursts up to `burst`."""

from __future__ import annotations

import math
import time


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, list[float]] = {}  # id -> [tokens, last refill]

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 when a request may pass; otherwise the seconds to wait before retrying."""
        t = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [self.burst - 1.0, t]
            return 0.0
        tokens = min(self.burst, bucket[0] + (t - bucket[1]) * self.rate)
        bucket[1] = t
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)


def retry_after_header(seconds: float) -> bytes:
    """Retry-After takes whole seconds; round up so a client never retries too early."""
    return str(max(1, math.ceil(seconds))).encode()
