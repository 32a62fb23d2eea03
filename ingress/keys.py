"""Which API keys open which automation: an in-memory index kept current from the config topic.

Rebuilt per automation on every snapshot (a `ConfigCache` listener), so a request costs one
sha256 and a constant-time comparison per key of that automation; never a database call.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from automations.snapshot import AutomationSnapshot

# (sha256 digest bytes, expires_at epoch seconds or None)
KeyEntry = tuple[bytes, float | None]


class KeyIndex:
    def __init__(self) -> None:
        self._keys: dict[str, tuple[KeyEntry, ...]] = {}

    def update(self, automation_id: str, snapshot: AutomationSnapshot | None) -> None:
        """The `ConfigCache` listener: replace this automation's keys (or drop them)."""
        if snapshot is None:
            self._keys.pop(automation_id, None)
            return
        entries = []
        for k in snapshot.api_keys:
            try:
                digest = bytes.fromhex(k.sha256)
            except ValueError:
                continue  # a malformed hash can match no key; the control plane owns the fix
            entries.append((digest, None if k.expires_at is None else k.expires_at.timestamp()))
        self._keys[automation_id] = tuple(entries)

    def check(self, automation_id: str, api_key: str, now: float | None = None) -> bool:
        """True when `api_key` is a current (or in-grace) key of this automation."""
        entries = self._keys.get(automation_id)
        if not entries:
            return False
        presented = hashlib.sha256(api_key.encode()).digest()
        t = time.time() if now is None else now
        ok = False
        for digest, expires_at in entries:
            # Compare against every entry (no early exit) so timing says nothing about which.
            match = hmac.compare_digest(presented, digest)
            ok |= match and (expires_at is None or expires_at > t)
        return ok
