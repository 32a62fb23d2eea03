"""The topic plan: one declarative spec per topic, from settings, and applying it.

`hookstream topics plan` prints it, `hookstream topics apply` creates what is missing and
reports drift (partitions, replication factor, configs) on topics that exist, changing
configs only when asked (`--fix-configs`) and never partitions or the replication factor.
Each service applies the plan when it starts: it creates missing topics unless
`HOOKSTREAM_KAFKA_CREATE_TOPICS` is off (a platform team owns the topics), in which case a
missing topic keeps it not ready, named on `/readyz` and logged once (`TopicGate`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    TopicAuthorizationFailedError,
    for_code,
)

from core.kafka import clients
from core.kafka.topics import COUNTS_RETENTION_MS, SAMPLES_RETENTION_MS, Topics
from core.serving import Failed
from core.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 24 * 60 * 60 * 1000
# Room beside the body on a record: key, headers (event id, content type, signature...),
# the Avro envelope around an invitation's variables, and the record batch's own overhead.
RECORD_OVERHEAD_BYTES = 64 * 1024

CLEANUP = "cleanup.policy"
RETENTION = "retention.ms"
MIN_ISR = "min.insync.replicas"
MAX_MESSAGE = "max.message.bytes"
DELETE_RETENTION = "delete.retention.ms"
# The columns of `hookstream topics plan`, in order (other configs show under "other").
SHOWN = (CLEANUP, RETENTION, MIN_ISR, MAX_MESSAGE)


@dataclass(frozen=True)
class TopicSpec:
    """What one topic should be. `configs` are the topic-level configs hookstream sets;
    a config not named here is the cluster's default and not checked for drift."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]
    why: str
    # The changelog must have as many partitions as the topic it is the store of.
    copartitioned_with: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "partitions": self.partitions,
                "replication_factor": self.replication_factor, "configs": dict(self.configs),
                "why": self.why, "copartitioned_with": self.copartitioned_with}


def record_limit(max_body_bytes: int) -> int:
    """`max.message.bytes` of a topic carrying webhook bodies (or values taken from them):
    the largest body the ingress accepts plus the record's overhead."""
    return max_body_bytes + RECORD_OVERHEAD_BYTES


def _retention(days: float) -> str:
    """retention.ms for a number of days; 0 keeps records for ever (-1)."""
    return "-1" if days == 0 else str(int(days * DAY_MS))


def _days(days: float) -> str:
    return "for ever" if days == 0 else f"{days:g} days"


def build_plan(topics: Topics, *, partitions: int = 3, replication_factor: int = 1,
               min_insync_replicas: int = 1, max_body_bytes: int = 1024 * 1024,
               retention_days: float = 7.0, dlq_retention_days: float = 30.0,
               outcomes_retention_days: float = 30.0) -> list[TopicSpec]:
    """Every topic of the pipeline with its partitions, replication factor and configs."""
    if min_insync_replicas > replication_factor:
        raise ValueError(f"min.insync.replicas ({min_insync_replicas}) cannot exceed the "
                         f"replication factor ({replication_factor}): every write would be "
                         "refused (HOOKSTREAM_KAFKA_MIN_INSYNC_REPLICAS, "
                         "HOOKSTREAM_KAFKA_REPLICATION_FACTOR)")
    isr = {MIN_ISR: str(min_insync_replicas)}
    big = {MAX_MESSAGE: str(record_limit(max_body_bytes))}
    transit = {CLEANUP: "delete", RETENTION: _retention(retention_days)}

    def spec(name: str, configs: Mapping[str, str], why: str, parts: int = partitions,
             copartitioned_with: str | None = None) -> TopicSpec:
        return TopicSpec(name, parts, replication_factor, {**configs, **isr}, why,
                         copartitioned_with)

    keep = _days(retention_days)
    return [
        spec(topics.raw, {**transit, **big},
             f"accepted webhooks, one record per request (its body); read by the worker "
             f"within seconds, kept {keep} to outlive a worker outage"),
        spec(topics.config, {CLEANUP: "compact"},
             "automation snapshots, the newest per automation: compacted, never deleted; one "
             "partition keeps the snapshots in one order", parts=1),
        spec(topics.scheduled, {**transit, **big},
             f"invitations with a delay or outside their send window; the scheduler moves each "
             f"into its changelog in the transaction that commits its offset, so {keep} need "
             f"only outlive a worker outage, not the delay (the changelog holds it)"),
        spec(topics.scheduler_changelog,
             {CLEANUP: "compact", DELETE_RETENTION: str(int((retention_days or 7) * DAY_MS)),
              **big},
             "the scheduler's store of waiting invitations (up to the longest delay, 3650 "
             "days): compacted, never deleted; tombstones kept as long as the transit topics "
             "so a worker's local store that was away catches up on releases",
             copartitioned_with=topics.scheduled),
        spec(topics.due, {**transit, **big},
             f"invitations to mail now; read by the notifier, kept {keep} to outlive a "
             f"notifier outage"),
        spec(topics.outcomes, {CLEANUP: "delete", RETENTION: _retention(outcomes_retention_days)},
             f"what became of each invitation (sent, failed, throttled...): kept "
             f"{_days(outcomes_retention_days)} as the record of what was mailed"),
        spec(topics.errors, transit,
             f"automation errors for the error mails and auto-disable; kept {keep}"),
        spec(topics.dlq, {CLEANUP: "delete", RETENTION: _retention(dlq_retention_days), **big},
             f"dead letters: records the worker could not turn into an invitation, with the "
             f"reason; kept {_days(dlq_retention_days)} for inspection and `hookstream dlq "
             f"replay`"),
        spec(topics.samples, {CLEANUP: "delete", RETENTION: str(SAMPLES_RETENTION_MS), **big},
             "dry-run samples for the console (respondent data): gone within the hour"),
        spec(topics.counts, {CLEANUP: "delete", RETENTION: str(COUNTS_RETENTION_MS)},
             "per-automation counts of each worker transaction, summed over 24 hours: two "
             "days"),
        # Created by Faust too (same partitions and replicas): declared here so a cluster
        # without topic creation has it; nothing is written to it, so no min.insync.replicas.
        TopicSpec(topics.faust_leader, 1, replication_factor, {CLEANUP: "delete"},
                  "the streams worker's Faust group subscribes to it (Faust's leader "
                  "election); empty"),
    ]


def plan_from_settings(settings: Settings) -> list[TopicSpec]:
    return build_plan(
        Topics(settings.topic_prefix), partitions=settings.topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        min_insync_replicas=settings.kafka_min_insync_replicas,
        max_body_bytes=settings.max_body_bytes, retention_days=settings.topic_retention_days,
        dlq_retention_days=settings.dlq_retention_days,
        outcomes_retention_days=settings.outcomes_retention_days)


# --- applying it ----------------------------------------------------------------------------

def admin_client(bootstrap: clients.Kafka) -> AIOKafkaAdminClient:
    """The admin client of the topic plan (the one place it is built here)."""
    return clients.admin(bootstrap)


@dataclass(frozen=True)
class Drift:
    """One way an existing topic differs from its spec."""

    topic: str
    item: str  # "partitions", "replication_factor" or a config name
    planned: str
    actual: str

    @property
    def fixable(self) -> bool:
        """Configs can be altered in place; partitions and replicas are left to a person
        (more partitions move keys to other partitions; fewer is impossible)."""
        return self.item not in ("partitions", "replication_factor")

    def __str__(self) -> str:
        return f"{self.topic}: {self.item} is {self.actual}, the plan says {self.planned}"

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "item": self.item, "planned": self.planned,
                "actual": self.actual, "fixable": self.fixable}


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # absent and not created (creation off)
    drift: list[Drift] = field(default_factory=list)  # still differing after this run
    fixed: list[Drift] = field(default_factory=list)  # configs altered by --fix-configs
    # Why drift was not checked: the principal may not read topic configs (DescribeConfigs).
    unchecked: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"created": self.created, "missing": self.missing,
                "drift": [d.to_json() for d in self.drift],
                "fixed": [d.to_json() for d in self.fixed], "unchecked": self.unchecked}


class TopicError(RuntimeError):
    """The cluster refused to create a topic (replication factor above its brokers, a config
    it does not allow...); the message names the topic and the broker's reason."""


def _same(key: str, planned: str, actual: str | None) -> bool:
    if actual is None:
        return False
    if key == CLEANUP:
        return {p.strip() for p in planned.split(",")} == {a.strip() for a in actual.split(",")}
    return planned == actual


async def _describe(admin: AIOKafkaAdminClient, names: Sequence[str]
                    ) -> tuple[dict[str, tuple[int, int]], dict[str, dict[str, tuple[str, bool]]]]:
    """Per topic: (partitions, smallest replica count), and every config as
    (value, set on the topic itself). Only for topics that exist (see `_drift`)."""
    shape: dict[str, tuple[int, int]] = {}
    for t in await admin.describe_topics(list(names)):
        parts = t["partitions"]
        if parts:
            shape[t["topic"]] = (len(parts), min(len(p["replicas"]) for p in parts))
    configs: dict[str, dict[str, tuple[str, bool]]] = {}
    if names:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        for response in responses:
            for res in response.to_object()["resources"]:
                if res["error_code"]:
                    raise for_code(res["error_code"])(
                        f"describe configs of {res['resource_name']}: {res['error_message']}")
                # config_source 1 = DYNAMIC_TOPIC_CONFIG: set on the topic, not inherited.
                configs[res["resource_name"]] = {
                    c["config_names"]: (c["config_value"], c.get("config_source") == 1)
                    for c in res["config_entries"]}
    return shape, configs


def _check_created(response: Any) -> list[str]:
    """Names created; raise TopicError for any refusal but "already exists" (another process
    created it between our list and create: the same end state)."""
    created = []
    for err in response.to_object()["topic_errors"]:
        code = err["error_code"]
        if code == 0:
            created.append(err["topic"])
        elif code != 36:  # TOPIC_ALREADY_EXISTS
            reason = err.get("error_message") or for_code(code).__name__
            raise TopicError(f"cannot create topic {err['topic']}: {reason}")
    return created


async def apply_plan(bootstrap: clients.Kafka, plan: Sequence[TopicSpec], *, create: bool = True,
                     check_drift: bool = True, fix_configs: bool = False) -> ApplyReport:
    """Create the plan's missing topics (if `create`), then compare the existing ones with
    their specs; `fix_configs` alters differing configs (keeping other topic-level configs),
    never partitions nor replication."""
    report = ApplyReport()
    admin = admin_client(bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in plan if s.name not in existing]
        if missing and not create:
            report.missing = [s.name for s in missing]
        elif missing:
            partners = [s.copartitioned_with for s in missing
                        if s.copartitioned_with and s.copartitioned_with in existing]
            partner_shape, _ = await _describe(admin, partners) if partners else ({}, {})
            new = []
            for s in missing:
                parts = partner_shape.get(s.copartitioned_with or "", (s.partitions, 0))[0]
                new.append(NewTopic(s.name, parts, s.replication_factor,
                                    topic_configs=dict(s.configs)))
            report.created = _check_created(await admin.create_topics(new))
            if report.created:
                log.info("created topics %s", ", ".join(report.created))
        if check_drift:
            try:
                await _drift(admin, [s for s in plan if s.name in existing], existing, report,
                             fix_configs)
            except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
                # A service may run without DescribeConfigs where a platform team owns the
                # topics: drift is theirs to check then, not a reason to stop.
                report.unchecked = f"{type(exc).__name__}: {exc}"
    finally:
        await admin.close()
    return report


async def _drift(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec], existing: set[str],
                 report: ApplyReport, fix_configs: bool) -> None:
    if not specs:
        return
    # Only topics that exist: a metadata request for a missing one may create it (brokers
    # with auto.create.topics.enable), with none of the plan's configs.
    wanted = ({s.name for s in specs} | {s.copartitioned_with for s in specs
                                         if s.copartitioned_with}) & existing
    shape, configs = await _describe(admin, sorted(wanted))
    alter: dict[str, dict[str, str]] = {}
    for s in specs:
        if s.name not in shape:
            continue  # deleted meanwhile: the next run creates it
        parts, replicas = shape[s.name]
        planned_parts = (shape[s.copartitioned_with][0]
                         if s.copartitioned_with in shape else s.partitions)
        if parts != planned_parts:
            report.drift.append(Drift(s.name, "partitions", str(planned_parts), str(parts)))
        if replicas != s.replication_factor:
            report.drift.append(Drift(s.name, "replication_factor",
                                      str(s.replication_factor), str(replicas)))
        have = configs.get(s.name, {})
        for key, planned in s.configs.items():
            actual = have.get(key, (None, False))[0]
            if not _same(key, planned, actual):
                d = Drift(s.name, key, planned, "unset" if actual is None else actual)
                if fix_configs:
                    alter.setdefault(s.name, {})[key] = planned
                    report.fixed.append(d)
                else:
                    report.drift.append(d)
    if alter:
        # AlterConfigs replaces a topic's whole set of topic-level configs: send the ones
        # already set on it too, so only the planned keys change.
        resources = []
        for name, changes in alter.items():
            kept = {k: v for k, (v, own) in configs.get(name, {}).items() if own}
            resources.append(ConfigResource(ConfigResourceType.TOPIC, name,
                                            configs={**kept, **changes}))
        for response in await admin.alter_configs(resources):
            for res in response.to_object()["resources"]:
                if res["error_code"]:
                    raise TopicError(f"cannot alter configs of {res['resource_name']}: "
                                     f"{res['error_message'] or for_code(res['error_code'])}")
        # The brokers apply a change when the controller's metadata reaches them: wait for it,
        # so what this run reports as fixed is what a describe now shows.
        deadline = asyncio.get_running_loop().time() + 10.0
        while True:
            _, now = await _describe(admin, sorted(alter))
            pending = [d for d in report.fixed
                       if not _same(d.item, d.planned, now.get(d.topic, {}).get(d.item,
                                                                               (None, False))[0])]
            if not pending or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
        for d in pending:
            report.fixed.remove(d)
            report.drift.append(d)
        log.info("altered configs of %s", ", ".join(sorted(alter)))


async def ensure_plan(settings: Settings, plan: Sequence[TopicSpec] | None = None
                      ) -> ApplyReport:
    """A service's start: the plan applied as the settings allow; drift logged, not fixed."""
    report = await apply_plan(clients.KafkaConnection.from_settings(settings),
                              plan or plan_from_settings(settings),
                              create=settings.kafka_create_topics)
    for d in report.drift:
        log.warning("topic drift: %s (hookstream topics apply shows it; --fix-configs "
                    "alters configs)", d)
    if report.unchecked:
        log.warning("topic configs not checked against the plan (%s)", report.unchecked)
    return report


class TopicGate:
    """Waits until every topic of the plan exists, creating them if the settings allow.

    With creation off, a missing topic keeps `check()` failing with the names (for /readyz),
    is logged once, and is looked for again every `retry_seconds` until someone creates it.
    Any other failure (Kafka unreachable, a topic refused) is raised to the caller.
    """

    def __init__(self, settings: Settings, *, retry_seconds: float = 5.0,
                 attempt_timeout: float = 15.0) -> None:
        self.settings = settings
        self.plan = plan_from_settings(settings)
        self.retry_seconds = retry_seconds
        self.attempt_timeout = attempt_timeout
        self.missing: list[str] = []
        self.present = False

    async def wait(self) -> ApplyReport:
        said = False
        while True:
            report = await asyncio.wait_for(ensure_plan(self.settings, self.plan),
                                            self.attempt_timeout)
            if not report.missing:
                self.missing, self.present = [], True
                if said:
                    log.info("the missing topics exist now; going on")
                return report
            self.missing = report.missing
            if not said:
                log.error("%s; HOOKSTREAM_KAFKA_CREATE_TOPICS is off, so this service is not "
                          "ready until they exist (create them with `hookstream topics "
                          "apply`, or ask whoever owns the cluster's topics); checking every "
                          "%.0fs", self.reason(), self.retry_seconds)
                said = True
            await asyncio.sleep(self.retry_seconds)

    def reason(self) -> str:
        return ("missing topic " if len(self.missing) == 1 else "missing topics ") + \
            ", ".join(self.missing)

    def check(self) -> bool | Failed:
        """For /readyz: True once every topic exists; else why not."""
        if self.present:
            return True
        return Failed(self.reason()) if self.missing else False


def format_plan(plan: Iterable[TopicSpec]) -> str:
    """The plan as a table, one topic a line."""
    header = ("TOPIC", "PARTITIONS", "RF", "CLEANUP", "RETENTION", "MIN.ISR",
              "MAX.MESSAGE.BYTES", "OTHER")
    rows = []
    for s in plan:
        c = s.configs
        other = ",".join(f"{k}={v}" for k, v in c.items() if k not in SHOWN)
        if s.copartitioned_with:
            other = ",".join(filter(None, [f"partitions as {s.copartitioned_with}", other]))
        rows.append((s.name, str(s.partitions),
                     str(s.replication_factor), c.get(CLEANUP, "default"),
                     _show_retention(c), c.get(MIN_ISR, "default"),
                     c.get(MAX_MESSAGE, "default"), other or "-"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def _show_retention(configs: Mapping[str, str]) -> str:
    if "delete" not in configs.get(CLEANUP, "delete"):
        return "never deleted"
    ms = configs.get(RETENTION)
    if ms is None:
        return "default"
    if ms == "-1":
        return "for ever"
    hours = int(ms) / 3_600_000
    return f"{hours / 24:g}d" if hours >= 24 else f"{hours:g}h"
