"""Topic names (behind the configurable prefix); how each is made is the plan's
(core/kafka/plan.py)."""

from __future__ import annotations

from dataclasses import dataclass

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
        """The scheduler's compacted store of waiting invitations; as many partitions as
        `scheduled`, whose store it is."""
        return f"{self.prefix}streams.scheduler-changelog"

    @property
    def faust_leader(self) -> str:
        """The leader topic Faust's group of the worker (app id `<prefix>hookstream-streams`)
        subscribes to; nothing hookstream reads or writes, but it must exist."""
        return f"{self.prefix}hookstream-streams-__assignor-__leader"

    def all(self) -> list[str]:
        """Every topic of the pipeline (the plan in core/kafka/plan.py says how each is made)."""
        return [self.raw, self.config, self.scheduled, self.scheduler_changelog, self.due,
                self.outcomes, self.errors, self.dlq, self.samples, self.counts, self.faust_leader]


# Samples hold respondent data someone sent to try the connection: gone within the hour.
SAMPLES_RETENTION_MS = 60 * 60 * 1000
# Counts are summed over the last 24 hours; two days leave room for a late reader.
COUNTS_RETENTION_MS = 2 * 24 * 60 * 60 * 1000


async def ensure_topics(bootstrap: clients.Kafka, topics: Topics, partitions: int = 3, *,
                        replication_factor: int = 1, min_insync_replicas: int = 1) -> None:
    """Create the pipeline's missing topics as the plan makes them, with `partitions` each
    (replication factor 1 unless told): for tests and benchmarks. Services apply the plan
    from their settings instead (`core.kafka.plan.TopicGate`)."""
    from core.kafka.plan import apply_plan, build_plan  # the plan builds on this module

    plan = build_plan(topics, partitions=partitions, replication_factor=replication_factor,
                      min_insync_replicas=min_insync_replicas)
    await apply_plan(bootstrap, plan, check_drift=False)
