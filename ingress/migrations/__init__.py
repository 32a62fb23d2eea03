"""The ingress's schema history (its shared tables on PostgreSQL: ingress/tables.py);
`migrate(url)` brings it up to date. The SQLite default needs none (ingress/idempotency.py)."""

from pathlib import Path

from core.sql import Migrations

MIGRATIONS = Migrations(Path(__file__).resolve().parent, "alembic_version_ingress")


def migrate(url: str) -> None:
    MIGRATIONS.upgrade(url)
