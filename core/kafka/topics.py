"""Topic names (behind the configurable prefix) and their creation."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from core.kafka import clients


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

    @property
    def samples(self) -> str:
        """Dry-run samples from the ingress's test endpoint, for the console's connection test
        (respondent data: short retention, see SHORT_LIVED)."""
        return f"{self.prefix}automations.samples"

    @property
    def counts(self) -> str:
        """Per-automation record counts of each worker transaction (accepted, filtered by
        condition, failed, invited), for the console's and the admin API's outcomes."""
        return f"{self.prefix}automations.counts"

    @property
    def scheduler_changelog(self) -> str:
        """The scheduler's compacted store of waiting invitations (streams creates it)."""
        return f"{self.prefix}streams.scheduler-changelog"

    def all(self) -> list[str]:
        return [self.raw, self.config, self.scheduled, self.due, self.outcomes, self.errors,
                self.dlq, self.samples, self.counts]

    def retention(self) -> dict[str, dict[str, str]]:
        """Topic configs beyond the broker's defaults, by topic name."""
        return {self.config: {"cleanup.policy": "compact"},
                self.samples: {"retention.ms": str(SAMPLES_RETENTION_MS)},
                self.counts: {"retention.ms": str(COUNTS_RETENTION_MS)}}


# Samples hold respondent data someone sent to try the connection: gone within the hour.
SAMPLES_RETENTION_MS = 60 * 60 * 1000
# Counts are summed over the last 24 hours; two days leave room for a late reader.
COUNTS_RETENTION_MS = 2 * 24 * 60 * 60 * 1000


async def ensure_topics(bootstrap: clients.Kafka, topics: Topics, partitions: int = 3) -> None:
    """Create the pipeline's topics if missing; the config topic is compacted, samples and
    counts expire (`Topics.retention`)."""
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = []
        for name in topics.all():
            if name in existing:
                continue
            configs = topics.retention().get(name, {})
            if name == topics.config:
                # One partition keeps a total order of snapshots; compaction keeps the newest.
                new.append(NewTopic(name, 1, 1, topic_configs=configs))
            else:
                new.append(NewTopic(name, partitions, 1, topic_configs=configs or None))
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process created them between our list and create: same end state
    finally:
        await admin.close()
