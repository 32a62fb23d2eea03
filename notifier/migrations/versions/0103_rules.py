"""notifier: when each respondent was last invited to the survey (issue 16, throttling)

Revision ID: 0103_rules
Revises: 0102_error_counts
Create Date: 2026-11-30

Respondents from before it have none: their next invitation is never throttled.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0103_rules"
down_revision: str | Sequence[str] | None = "0102_error_counts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("respondents") as batch:
        batch.add_column(sa.Column("last_invited_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("respondents") as batch:
        batch.drop_column("last_invited_at")
