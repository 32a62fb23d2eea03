"""Alembic environment of the ingress's tables (the shared idempotency store)."""

from core.sql import run_migrations
from ingress.idempotency_pg import METADATA

run_migrations(METADATA)
