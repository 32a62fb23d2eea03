"""The notifier's schema history; `migrate(url)` brings its tables up to date."""

from pathlib import Path

from core.sql import Migrations

MIGRATIONS = Migrations(Path(__file__).resolve().parent, "alembic_version_notifier")


def migrate(url: str) -> None:
    MIGRATIONS.upgrade(url)
