"""Every setting of hookstream, read from `HOOKSTREAM_*` environment variables.

Each default is safe for `make run` on one machine; production overrides them. Every field
carries a description: `docs/SETTINGS.md` is generated from this class
(`python -m core.settings_doc`), and a test fails when a setting has none or the page is stale.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")


class Settings(BaseSettings):
    # hide_input_in_errors: a refused combination must not print the secrets it was given.
    model_config = SettingsConfigDict(env_prefix="HOOKSTREAM_", extra="ignore",
                                      hide_input_in_errors=True)

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers: host:port, or a "
        "comma-separated list of them (a:9092,b:9092).")
    topic_prefix: str = Field(
        "hookstream.", description="Prefix of every topic name (`<prefix>webhooks.raw`, ...).")
    # Issue 13: 6 splits evenly over 1, 2, 3 or 6 workers and 1, 2, 3 or 6 notifiers.
    topic_partitions: int = Field(
        6, ge=1, description="Partitions of each topic hookstream creates (the config topic "
        "always has one). The most workers, and the most notifiers, that share the load: a "
        "consumer group gives each partition to one member, so members beyond this count "
        "idle. 6 splits evenly over 2 notifiers and 3 workers (or 6). Each partition costs a "
        "worker one transactional producer per partitioned input it owns (a connection and "
        "a transaction per batch) and the brokers a log per replica, so more than needed "
        "makes batches smaller and transactions more; raising it later moves keys to other "
        "partitions (docs/DEPLOY.md).")

    # --- the topic plan (issue 12 item 2; issue 15: the dead-letter topic's retention) ------
    kafka_create_topics: bool = Field(
        True, description="Services create the topics of the plan that are missing when they "
        "start (`hookstream topics plan` shows it). Off where a platform team owns the "
        "topics: a service then stays not ready, naming the missing topic on /readyz, until "
        "someone creates it (`hookstream topics apply`).")
    kafka_replication_factor: int = Field(
        1, ge=1, description="Replication factor of the topics hookstream creates: 1 for one "
        "local broker; 3 in production (docs/DEPLOY.md).")
    kafka_min_insync_replicas: int = Field(
        1, ge=1, description="`min.insync.replicas` of every topic: how many replicas must "
        "have a write before it is acknowledged (producers use acks=all). 1 for one local "
        "broker; 2 in production with a replication factor of 3.")
    topic_retention_days: float = Field(
        7.0, ge=0, description="Retention of the transit topics (webhooks.raw, "
        "invitations.scheduled, invitations.due, automations.errors): how long a stopped "
        "consumer may stay away before records it has not read are deleted. Waiting "
        "invitations do not depend on it: the scheduler's changelog is compacted, never "
        "deleted. 0 keeps records for ever.")
    dlq_retention_days: float = Field(
        30.0, ge=0, description="Retention of the dead-letter topic (webhooks.dlq): how long "
        "a rejected record can be inspected and replayed. 0 keeps them for ever.")
    outcomes_retention_days: float = Field(
        30.0, ge=0, description="Retention of invitations.outcomes, the record of what "
        "became of each invitation. 0 keeps them for ever.")

    # --- Kafka client security (issue 12, item 1; translated in core/kafka/clients.py) -----
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client talks to the brokers: PLAINTEXT, "
        "SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS: the usual one in production).")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 "
        "(OAUTHBEARER is not supported, see docs/DESIGN.md).")
    kafka_sasl_username: str | None = Field(
        None, description="SASL user name (with SASL_*).")
    kafka_sasl_password: SecretStr = Field(
        SecretStr(""), description="SASL password (with SASL_*); a secret, never logged.")
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates (with "
        "SSL/SASL_SSL); unset: the system's CAs.")
    kafka_ssl_certfile: Path | None = Field(
        None, description="Mutual TLS: PEM file of this client's certificate (with "
        "HOOKSTREAM_KAFKA_SSL_KEYFILE).")
    kafka_ssl_keyfile: Path | None = Field(
        None, description="Mutual TLS: PEM file of this client's private key.")
    kafka_ssl_key_password: SecretStr = Field(
        SecretStr(""), description="Password of that private key, if it is encrypted; a "
        "secret.")
    kafka_client_id: str = Field(
        "hookstream", description="client.id every Kafka client sends (broker logs, quotas).")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_list(cls, value: str) -> str:
        from core.kafka.clients import parse_bootstrap

        return ",".join(parse_bootstrap(value))

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        from core.kafka.clients import security_problem

        problem = security_problem(
            self.kafka_security_protocol, self.kafka_sasl_mechanism, self.kafka_sasl_username,
            self.kafka_sasl_password.get_secret_value(),
            *(str(f) if f is not None else None
              for f in (self.kafka_ssl_cafile, self.kafka_ssl_certfile,
                        self.kafka_ssl_keyfile)))
        if problem:
            raise ValueError(problem)
        return self

    # --- stores and mail ---------------------------------------------------------------------
    database_url: str = Field(
        f"sqlite:///{VAR_DIR}/hookstream.db",
        description="SQLAlchemy URL of the SQL store (SQLite file or PostgreSQL).")
    smtp_url: SecretStr = Field(
        SecretStr("smtp://127.0.0.1:8025"),
        description="SMTP server: smtp://user:pass@host:587?starttls=1 or smtps://...; "
        "a secret, never logged.")
    mail_from: str = Field(
        "hookstream <no-reply@hookstream.local>", description="From: of every mail sent.")
    smtp_concurrency: int = Field(
        8, ge=1, description="SMTP connections the notifier keeps open and sends on at once.")

    # --- the control plane -------------------------------------------------------------------
    admin_token: SecretStr = Field(
        SecretStr("dev-admin-token"),
        description="Bearer token of the admin API; a secret. Set it in every deployment.")
    admin_url: str = Field(
        "http://127.0.0.1:8081",
        description="Where other services reach the admin API (the notifier disables "
        "automations through it).")
    admin_host: str = Field("127.0.0.1", description="Address the admin API listens on.")
    admin_port: int = Field(8081, description="Port of the admin API.")
    key_grace_seconds: float = Field(
        3600.0, ge=0, description="How long a rotated-out API key (or webhook signing "
        "secret) keeps working.")

    # --- the survey page ---------------------------------------------------------------------
    survey_base_url: str = Field(
        "http://127.0.0.1:8084/s",
        description="Base of the personal survey links in invitations (`<base>/<token>`).")
    survey_host: str = Field("127.0.0.1", description="Address the survey page listens on.")
    survey_port: int = Field(8084, description="Port of the survey page (`/s/{token}`).")

    # --- the ingress -------------------------------------------------------------------------
    ingress_host: str = Field("127.0.0.1", description="Address the ingress listens on.")
    ingress_port: int = Field(8080, description="Port of the ingress.")
    max_body_bytes: int = Field(
        1024 * 1024, ge=1, description="Largest webhook body accepted (bytes); larger is 413.")
    rate_limit: float = Field(
        1000.0, gt=0, description="Requests per second allowed per automation (token bucket).")
    rate_burst: int = Field(
        2000, ge=1, description="Requests per automation allowed in a burst above the rate.")
    idempotency_window_seconds: float = Field(
        86400.0, gt=0, description="How long an Idempotency-Key is remembered.")
    # Issue 13, item 1: the store several ingress replicas share.
    idempotency_url: str | None = Field(
        None, description="Where the ingress remembers Idempotency-Keys (and signed delivery "
        "ids): unset, a SQLite file under HOOKSTREAM_VAR_DIR (`ingress-idempotency.sqlite3`), "
        "which serves ONE ingress process; a `postgresql://` URL (it may be the database of "
        "HOOKSTREAM_DATABASE_URL) for the store several ingress replicas share, which "
        "SEVERAL REPLICAS NEED: with per-process files, a retry that reaches another replica "
        "is published again and may invite twice (docs/DEPLOY.md). Takes `sqlite:///PATH` "
        "too.")
    ingress_client: Literal["rdkafka", "aiokafka"] = Field(
        "rdkafka", description="The ingress's Kafka client: rdkafka (confluent-kafka, "
        "the faster here, see bench/README.md) or aiokafka.")
    ingress_producers: int = Field(
        2, ge=1, le=16, description="aiokafka client only: producers used in turn (one "
        "produce request in flight per connection each).")
    ingress_linger_ms: float = Field(
        1.0, ge=0, le=1000,
        description="librdkafka's linger before a produce request leaves (ms; fractions "
        "allowed). 1 ms: fewer, larger produce requests for a broker sharing the cores "
        "(bench/README.md: not slower at 2 connections, up to 1.2x the requests/s under "
        "load).")
    ingress_send_timeout_seconds: float = Field(
        12.0, gt=0, description="How long the ingress waits for Kafka's acknowledgement "
        "before it answers 503. Longer than the brokers' `broker.session.timeout.ms` (9 s by "
        "default; 6 s on the local cluster): a broker that dies keeps leading its partitions "
        "until the controller fences it, and a shorter wait would answer 503 for a loss the "
        "cluster rides out (docs/DEPLOY.md).")

    # --- signed webhooks and the integrator's errors (issue 16, items 1 and 4) --------------
    secrets_key: SecretStr = Field(
        SecretStr("dev-secrets-key"),
        description="Key that seals the webhook signing secrets (AES-256-GCM) in the SQL store "
        "and on automations.config; the control plane and the ingress need the same one. A "
        "secret: set it in every deployment (changing it makes the sealed secrets unreadable: "
        "rotate each signing secret afterwards).")
    signature_tolerance_seconds: float = Field(
        300.0, gt=0, description="How far a signed webhook's timestamp may be from the "
        "ingress's clock (either way); older is refused as a replay (401).")
    ingress_error_report_seconds: float = Field(
        60.0, gt=0, description="The ingress counts the requests it refuses per automation "
        "(400, 401, 409, 413, 415, 429) and reports the counts on automations.errors once "
        "per this interval.")

    # --- ingress input limits and metrics address (issue 15, helper E) ---------------------
    ingress_max_depth: int = Field(
        64, ge=2, le=512, description="Deepest nesting of objects/arrays a webhook body or a "
        "dry-run sample may have (a top-level object is level 1); deeper is 400 too_deep.")
    dry_run_rate: float = Field(
        1.0, gt=0, description="Dry runs (POST /v1/hooks/{id}/test) per second allowed per "
        "automation (token bucket); more is 429 rate_limited.")
    dry_run_burst: int = Field(
        10, ge=1, description="Dry runs per automation allowed in a burst above the rate.")
    dry_run_max_records: int = Field(
        100, ge=1, description="Most records a dry-run sample may hold; more is 413 "
        "too_many_records.")
    ingress_metrics_port: int | None = Field(
        None, description="When set, the ingress serves /metrics (with /healthz and /readyz) "
        "on this port of `ingress_metrics_host` instead of on its public address, where "
        "/metrics is then 404.")
    ingress_metrics_host: str = Field(
        "127.0.0.1", description="Address of the ingress's internal /metrics server (see "
        "`ingress_metrics_port`).")

    # --- rate limits across ingress replicas (issue 13, item 2) -----------------------------
    ingress_rate_store_url: str | None = Field(
        None, description="PostgreSQL URL (SQLAlchemy) of the rate-limit buckets every ingress "
        "replica shares: the per-automation rate then holds across replicas (bound in "
        "docs/DESIGN.md). Unset: each ingress process keeps its own bucket (one replica).")
    ingress_rate_lease: int = Field(
        20, ge=1, le=10_000, description="Most tokens an ingress replica takes from an "
        "automation's shared bucket at once (and also at most a tenth of a second of its "
        "rate); spent locally, so the store sees one UPDATE per lease, not per request.")
    # --- end rate limits across ingress replicas ---------------------------------------------
    # --- ingress processes (issue 17, helper 7) ---------------------------------------------
    ingress_interface: Literal["asgi", "rsgi"] = Field(
        "asgi", description="How granian hands requests to the ingress: asgi (the reference; "
        "uvicorn serves ASGI only) or rsgi (granian's own interface: ~1.2x the requests/s, "
        "bench/README.md; but the path reaches the app percent-decoded, so `{id}%2Ftest` "
        "reaches the dry run instead of a 404).")
    ingress_workers: int = Field(
        1, ge=1, le=64, description="Server processes of `hookstream ingress` on one address "
        "(each with its own Kafka producer; bench/README.md for the figures). More than 1 "
        "needs `ingress_metrics_port`: worker k serves its own /metrics on the k-th port from "
        "it (scrape them all, Prometheus sums the series). Rate limits are counted per "
        "process, as per replica; idempotency keys are shared (one SQLite file).")

    ingress_max_connections: int = Field(
        16_384, ge=64, le=1_000_000, description="Open client connections each ingress "
        "process serves at once, idle keep-alive ones included (granian's `backpressure`; "
        "uvicorn has no such cap). A connection past it waits in the kernel's accept "
        "queue until one closes. Keep it above the requests a broker failover holds open "
        "(the webhook rate times HOOKSTREAM_INGRESS_SEND_TIMEOUT_SECONDS): granian's own "
        "default, 1,024, left new integrators' connections unanswered for tens of seconds "
        "after a failover at 100 webhooks/s, while idle keep-alive connections held every "
        "slot. The process raises its open-files limit to fit (up to the hard limit, and "
        "lowers this to what that allows, saying so in the log).")

    # --- streams and notifier ----------------------------------------------------------------
    day_seconds: float = Field(
        86400.0, gt=0, description="Length of a day for delays, throttling and send "
        "windows (shorten it for tests and demos; a send window then runs on a scaled clock "
        "where this many seconds are one day, see docs/DESIGN.md).")
    disable_after: int = Field(
        10, ge=1, description="Consecutive failures after which an automation is disabled.")
    # --- held invitations and SMTPUTF8 (issue 15) --------------------------------------------
    hold_expiry_days: float = Field(
        7.0, gt=0, description="An invitation that falls due while its automation is "
        "disabled is held (outcome held); it is sent when the automation is enabled again "
        "within this many days (of HOOKSTREAM_DAY_SECONDS) after its due time, else it "
        "ends with outcome expired. Deleting the automation drops its held invitations.")
    smtp_utf8: bool = Field(
        False, description="Whether the SMTP server offers SMTPUTF8, so an address with "
        "non-ASCII characters before the @ can be delivered. Off: the worker refuses such "
        "addresses (dead-letter reason unsupported_email). On: the notifier sends them with "
        "SMTPUTF8 (a server that does not offer it then fails them as "
        "smtputf8_unsupported). A non-ASCII domain always works (IDNA).")
    # --- end held invitations and SMTPUTF8 ---------------------------------------------------
    alert_interval_seconds: float = Field(
        300.0, gt=0, description="Error mails are grouped: at most one per automation per "
        "interval.")
    metrics_host: str = Field(
        "127.0.0.1", description="Address the worker and the notifier serve /metrics and "
        "their probes on.")
    worker_port: int = Field(8082, description="Port of the streams worker's /metrics and "
                             "probes.")
    notifier_port: int = Field(8083, description="Port of the notifier's /metrics and probes.")
    notifier_dbapi_claim: bool = Field(
        True, description="The notifier claims and finishes invitations on the database "
        "driver's cursor (SQLite, PostgreSQL) instead of through SQLAlchemy's statements: "
        "the same SQL for about a quarter of the CPU (bench/README.md, issue 17). Off: the "
        "SQLAlchemy reference, which a test keeps equal to it.")

    # --- worker retries (issue 15, item 2: no record blocks a partition) ---------------------
    worker_max_attempts: int = Field(
        5, ge=1, description="Attempts the streams worker makes at a record whose processing "
        "fails (the record alone in its transaction) before it sets the record aside on the "
        "dead-letter topic (reason processing_failed) with an AutomationError and its "
        "partition moves on. Broker outages are retried without limit and not counted.")
    worker_retry_backoff_seconds: float = Field(
        0.5, gt=0, description="Pause of a partition before its first retry after a failed "
        "transaction; doubles with each failure, up to worker_retry_backoff_max_seconds.")
    worker_retry_backoff_max_seconds: float = Field(
        30.0, gt=0, description="Longest pause of a partition between two retries.")
    worker_raw_fetch_wait_ms: int = Field(
        100, ge=1, le=5000, description="Longest the broker may hold the worker's fetch of "
        "webhooks.raw partitions that have nothing new. aiokafka sends no second fetch to a "
        "broker while one is in flight, so after a transaction slower than 100 ms a fetch of "
        "only idle partitions holds the busy ones back up to this long (issue 17). Lower: a "
        "shorter worst case; higher: fewer requests from an idle worker.")
    worker_commit_gap_ms: float = Field(
        4.0, ge=0, le=1000, description="Least time between the end of the worker's "
        "transactions and the beginning of its next ones; records that arrive meanwhile join "
        "the batch. The coordinator writes a commit's markers after answering it, and a "
        "transaction begun before they are written waits 20 ms in the Kafka client (issue "
        "17). 0: begin at once. Only a busy worker waits; an idle one's gap is long over.")

    # --- this machine ------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the services started without a --log-level option.")
    var_dir: Path = Field(VAR_DIR, description="Local state: SQLite files, the local broker's "
                          "data, logs and the SMTP sink's mails.")
    kafka_port: int = Field(9092, description="Port of the local broker `hookstream kafka "
                            "start` runs.")
    kafka_controller_port: int = Field(
        9093, description="Controller port of that local broker (KRaft).")

    # --- tokens and logs (issue 15, items 4, 5 and 8) -----------------------------------------
    notifier_admin_token: SecretStr = Field(
        SecretStr("dev-notifier-token"),
        description="Bearer token the notifier uses on the admin API: it may only disable and "
        "enable automations (403 on every other route). The admin and the notifier need the "
        "same one; a secret: set it in every deployment.")
    log_repeat_seconds: float = Field(
        30.0, gt=0, description="Repeated warnings from one place (a broker or SMTP outage's "
        "connection errors) are written once per this interval, the next line with the count.")


@lru_cache
def get_settings() -> Settings:
    return Settings()


# --- refusing to expose the development tokens (issue 15, item 5) ------------------------------

_DEV_TOKENS = {"admin_token": "dev-admin-token", "notifier_admin_token": "dev-notifier-token"}


def is_loopback(host: str) -> bool:
    """`host` is reached from this machine only (127.0.0.0/8, ::1, `localhost`). Any other
    name may resolve to a public address, so it counts as exposed."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_token_refusal(settings: Settings, host: str, service: str,
                          tokens: tuple[str, ...] = ("admin_token",)) -> str | None:
    """Why `service` must not listen on `host` with these settings (one line), or None.

    The development tokens are public (they are in this file): behind a non-loopback address
    they would let anyone who can reach the port administer the pipeline."""
    if is_loopback(host):
        return None
    for name in tokens:
        if getattr(settings, name).get_secret_value() == _DEV_TOKENS[name]:
            env = f"HOOKSTREAM_{name.upper()}"
            return (f"refusing to serve the {service} on {host} with the default {env}: "
                    f"set {env} to a long random string (or bind to 127.0.0.1)")
    return None
