"""Make the config topic agree with the store: at start, and after failed publishes."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy.orm import Session

from automations.config_cache import ConfigCache
from automations.snapshot import AutomationSnapshot
from control_plane import service
from control_plane.publisher import ConfigPublisher
from control_plane.snapshots import build_snapshot
from control_plane.store.models import Automation
from control_plane.store.unit import Store
from core.kafka.clients import Kafka

log = logging.getLogger(__name__)


async def keys_on_topic(bootstrap: Kafka, topic: str, timeout: float = 30.0) -> set[str]:
    """The automation ids the compacted topic currently holds a snapshot for."""
    cache = ConfigCache(bootstrap, topic)
    await cache.start(wait_ready=timeout)
    try:
        return set(cache.all())
    finally:
        await cache.stop()


async def republish_all(store: Store, publisher: ConfigPublisher) -> tuple[int, int]:
    """Every stored automation's snapshot, and a tombstone for every id the store no longer
    has. Returns (published, tombstoned)."""
    snapshots = await store.arun(service.all_snapshots)
    stale = await keys_on_topic(publisher.bootstrap, publisher.topic) - {s.id for s in snapshots}
    for snap in snapshots:
        await publisher.publish(snap)
    for automation_id in sorted(stale):
        await publisher.tombstone(automation_id)
    log.info("config topic %s republished: %d snapshots, %d tombstones", publisher.topic,
             len(snapshots), len(stale))
    return len(snapshots), len(stale)


async def republish_ids(store: Store, publisher: ConfigPublisher, ids: Iterable[str]) -> None:
    """The current state of these automations: a snapshot, or a tombstone if deleted."""
    wanted = sorted(set(ids))

    def load(s: Session) -> dict[str, AutomationSnapshot | None]:
        out: dict[str, AutomationSnapshot | None] = {}
        for automation_id in wanted:
            a = s.get(Automation, automation_id)
            out[automation_id] = None if a is None else build_snapshot(a)
        return out

    for automation_id, snap in (await store.arun(load)).items():
        if snap is None:
            await publisher.tombstone(automation_id)
        else:
            await publisher.publish(snap)
