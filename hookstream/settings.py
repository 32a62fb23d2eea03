"""Every setting of hookstream, read from `HOOKSTREAM_*` environment variables.

Each default is safe for `make run` on one machine; production overrides them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOOKSTREAM_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "hookstream."
    topic_partitions: int = Field(default=3, ge=1)
    database_url: str = f"sqlite:///{VAR_DIR}/hookstream.db"
    smtp_url: SecretStr = SecretStr("smtp://127.0.0.1:8025")
    mail_from: str = "hookstream <no-reply@hookstream.local>"
    admin_token: SecretStr = SecretStr("dev-admin-token")
    admin_url: str = "http://127.0.0.1:8081"
    survey_base_url: str = "http://127.0.0.1:8081/s"
    day_seconds: float = Field(default=86400.0, gt=0)
    disable_after: int = Field(default=10, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    rate_limit: float = Field(default=1000.0, gt=0)  # requests per second per automation
    rate_burst: int = Field(default=2000, ge=1)
    key_grace_seconds: float = Field(default=3600.0, ge=0)
    idempotency_window_seconds: float = Field(default=86400.0, gt=0)
    alert_interval_seconds: float = Field(default=300.0, gt=0)
    smtp_concurrency: int = Field(default=8, ge=1)
    ingress_host: str = "127.0.0.1"
    ingress_port: int = 8080
    # librdkafka's linger before a produce request leaves (ms; fractions allowed).
    ingress_linger_ms: float = Field(default=0.5, ge=0, le=1000)
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    metrics_host: str = "127.0.0.1"  # where worker and notifier serve /metrics and /healthz
    worker_port: int = 8082  # the streams worker's /metrics and health
    notifier_port: int = 8083  # the notifier's /metrics and health
    var_dir: Path = VAR_DIR
    kafka_port: int = 9092
    kafka_controller_port: int = 9093


@lru_cache
def get_settings() -> Settings:
    return Settings()
