"""Alembic environment of the notifier's tables (respondents, invitations, errors, streaks)."""

from core.sql import run_migrations
from notifier.models import Base

run_migrations(Base.metadata)
