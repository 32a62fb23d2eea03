"""Alembic environment of the ingress's tables (the shared idempotency store and rate buckets)."""

from core.sql import run_migrations
from ingress.tables import METADATA

run_migrations(METADATA)
