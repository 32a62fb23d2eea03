"""notifier: invitations held while their automation is disabled (issue 15, item 6)

Revision ID: 0104_held
Revises: 0103_rules
Create Date: 2026-11-30

A held invitation keeps its request (Avro) until it is sent, expires or its automation is
deleted; the sweep finds held rows by (status, due_at).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0104_held"
down_revision: str | Sequence[str] | None = "0103_rules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invitations") as batch:
        batch.add_column(sa.Column("request", sa.LargeBinary(), nullable=True))
    op.create_index("ix_invitations_status_due", "invitations", ["status", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_invitations_status_due", table_name="invitations")
    with op.batch_alter_table("invitations") as batch:
        batch.drop_column("request")
