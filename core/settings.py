"""Every setting of hookstream, read from `HOOKSTREAM_*` environment variables.

Each default is safe for `make run` on one machine; production overrides them. Every field
carries a description: `docs/SETTINGS.md` is generated from this class
(`python -m core.settings_doc`), and a test fails when a setting has none or the page is stale.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOOKSTREAM_", extra="ignore")

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers (host:port).")
    topic_prefix: str = Field(
        "hookstream.", description="Prefix of every topic name (`<prefix>webhooks.raw`, ...).")
    topic_partitions: int = Field(
        3, ge=1, description="Partitions of each topic hookstream creates (the config topic "
        "always has one).")

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
    ingress_client: Literal["rdkafka", "aiokafka"] = Field(
        "rdkafka", description="The ingress's Kafka client: rdkafka (confluent-kafka, "
        "the faster here, see bench/README.md) or aiokafka.")
    ingress_producers: int = Field(
        2, ge=1, le=16, description="aiokafka client only: producers used in turn (one "
        "produce request in flight per connection each).")
    ingress_linger_ms: float = Field(
        0.5, ge=0, le=1000,
        description="librdkafka's linger before a produce request leaves (ms; fractions "
        "allowed).")
    ingress_send_timeout_seconds: float = Field(
        4.0, gt=0, description="How long the ingress waits for Kafka's acknowledgement "
        "before it answers 503.")

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

    # --- streams and notifier ----------------------------------------------------------------
    day_seconds: float = Field(
        86400.0, gt=0, description="Length of a day for delays, throttling and send "
        "windows (shorten it for tests and demos; a send window then runs on a scaled clock "
        "where this many seconds are one day, see docs/DESIGN.md).")
    disable_after: int = Field(
        10, ge=1, description="Consecutive failures after which an automation is disabled.")
    alert_interval_seconds: float = Field(
        300.0, gt=0, description="Error mails are grouped: at most one per automation per "
        "interval.")
    metrics_host: str = Field(
        "127.0.0.1", description="Address the worker and the notifier serve /metrics and "
        "their probes on.")
    worker_port: int = Field(8082, description="Port of the streams worker's /metrics and "
                             "probes.")
    notifier_port: int = Field(8083, description="Port of the notifier's /metrics and probes.")

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

    # --- this machine ------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the services started without a --log-level option.")
    var_dir: Path = Field(VAR_DIR, description="Local state: SQLite files, the local broker's "
                          "data, logs and the SMTP sink's mails.")
    kafka_port: int = Field(9092, description="Port of the local broker `hookstream kafka "
                            "start` runs.")
    kafka_controller_port: int = Field(
        9093, description="Controller port of that local broker (KRaft).")


@lru_cache
def get_settings() -> Settings:
    return Settings()
