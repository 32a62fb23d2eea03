"""Integrator API keys: random, shown once, stored and compared only as SHA-256 hex."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from automations.snapshot import ApiKeyHash


def generate() -> str:
    """A new key (256 random bits, URL-safe). Return it to the caller once; store its hash."""
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def grace_expiry(grace_seconds: float, now: datetime | None = None) -> datetime:
    """When a key rotated out now stops working."""
    return (now or datetime.now(UTC)) + timedelta(seconds=grace_seconds)


def matches(key: str, hashes: Iterable[ApiKeyHash], now: datetime | None = None) -> bool:
    """Whether `key` is one of the (unexpired) keys; constant-time per comparison."""
    now = now or datetime.now(UTC)
    digest = hash_key(key)
    ok = False
    for h in hashes:
        live = h.expires_at is None or h.expires_at > now
        # Compare every entry, so the time taken says nothing about which one matched.
        ok |= hmac.compare_digest(digest, h.sha256) and live
    return ok
