"""Integrator API keys: random, shown once, stored only as SHA-256, checked in constant time.

The control plane generates a key and stores `hash_key(key)`; a snapshot carries those hashes.
The ingress compiles a snapshot's hashes once (`stored`) and checks every presented key with
`verify`: the one key check of the product.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from automations.snapshot import ApiKeyHash

# A stored key as `verify` compares it: (SHA-256 digest, expires_at epoch seconds or None).
StoredKey = tuple[bytes, float | None]


def generate() -> str:
    """A new key (256 random bits, URL-safe). Return it to the caller once; store its hash."""
    return secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def hash_key(key: str) -> str:
    """What is stored for a key: its SHA-256 as hex."""
    return digest(key).hex()


def grace_expiry(grace_seconds: float, now: datetime | None = None) -> datetime:
    """When a key rotated out now stops working."""
    return (now or datetime.now(UTC)) + timedelta(seconds=grace_seconds)


def stored(hashes: Iterable[ApiKeyHash]) -> tuple[StoredKey, ...]:
    """A snapshot's key hashes in the form `verify` compares."""
    out = []
    for h in hashes:
        try:
            d = bytes.fromhex(h.sha256)
        except ValueError:
            continue  # a malformed hash can match no key; the control plane owns the fix
        out.append((d, None if h.expires_at is None else h.expires_at.timestamp()))
    return tuple(out)


def verify(key: str, keys: Iterable[StoredKey], now: float | None = None) -> bool:
    """Whether `key` is one of `keys` and not expired at `now` (epoch seconds)."""
    presented = digest(key)
    t = time.time() if now is None else now
    ok = False
    for d, expires_at in keys:
        # Compare against every entry (no early exit) so timing says nothing about which.
        ok |= hmac.compare_digest(presented, d) and (expires_at is None or expires_at > t)
    return ok
