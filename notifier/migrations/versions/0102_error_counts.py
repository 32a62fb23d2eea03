"""notifier: automation_errors.count and since (the ingress's counts of refused requests)

Revision ID: 0102_error_counts
Revises: 0101_notifier
Create Date: 2026-12-01

Issue 16, item 4. An error recorded before is one occurrence (count 1, no interval).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0102_error_counts"
down_revision: str | Sequence[str] | None = "0101_notifier"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("automation_errors") as batch:
        batch.add_column(sa.Column("count", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("since", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("automation_errors") as batch:
        batch.drop_column("since")
        batch.drop_column("count")
