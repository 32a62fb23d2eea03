"""Alembic environment of the control plane's tables (surveys, messages, automations, keys)."""

from control_plane.store.models import Base
from core.sql import run_migrations

run_migrations(Base.metadata)
