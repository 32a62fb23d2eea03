"""Topic names (behind the configurable prefix) and their creation."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


@dataclass(frozen=True)
class Topics:
    prefix: str = "hookstream."

    @property
    def raw(self) -> str:
        return f"{self.prefix}webhooks.raw"

    @property
    def config(self) -> str:
        return f"{self.prefix}automations.config"

    @property
    def scheduled(self) -> str:
        return f"{self.prefix}invitations.scheduled"

    @property
    def due(self) -> str:
        return f"{self.prefix}invitations.due"

    @property
    def outcomes(self) -> str:
        return f"{self.prefix}invitations.outcomes"

    @property
    def errors(self) -> str:
        return f"{self.prefix}automations.errors"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}webhooks.dlq"

    def all(self) -> list[str]:
        return [self.raw, self.config, self.scheduled, self.due, self.outcomes, self.errors,
                self.dlq]


async def ensure_topics(bootstrap: str, topics: Topics, partitions: int = 3) -> None:
    """Create the pipeline's topics if missing; the config topic is compacted."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = []
        for name in topics.all():
            if name in existing:
                continue
            if name == topics.config:
                # One partition keeps a total order of snapshots; compaction keeps the newest.
                new.append(NewTopic(name, 1, 1, topic_configs={"cleanup.policy": "compact"}))
            else:
                new.append(NewTopic(name, partitions, 1))
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process created them between our list and create: same end state
    finally:
        await admin.close()
