"""Which API keys open which automation: an in-memory index kept current from the config topic.

Rebuilt per automation on every snapshot (a `ConfigCache` listener), so a request costs one
`automations.keys.verify` (a sha256 and a constant-time comparison per key of that
automation); never a database call.
"""

from __future__ import annotations

from automations import keys
from automations.snapshot import AutomationSnapshot


class KeyIndex:
    def __init__(self) -> None:
        self._keys: dict[str, tuple[keys.StoredKey, ...]] = {}

    def update(self, automation_id: str, snapshot: AutomationSnapshot | None) -> None:
        """The `ConfigCache` listener: replace this automation's keys (or drop them)."""
        if snapshot is None:
            self._keys.pop(automation_id, None)
        else:
            self._keys[automation_id] = keys.stored(snapshot.api_keys)

    def check(self, automation_id: str, api_key: str, now: float | None = None) -> bool:
        """True when `api_key` is a current (or in-grace) key of this automation."""
        entries = self._keys.get(automation_id)
        return bool(entries) and keys.verify(api_key, entries, now)
