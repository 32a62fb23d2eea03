"""ingress: the idempotency table several ingress replicas share (PostgreSQL)

Revision ID: 0201_idempotency
Revises:
Create Date: 2026-11-30

Issue 13, item 1. Owned by the ingress (table in ingress/idempotency_pg.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0201_idempotency"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingress_idempotency",
        sa.Column("automation", sa.String(64), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("automation", "key", name="pk_ingress_idempotency"),
    )
    op.create_index("ix_ingress_idempotency_created", "ingress_idempotency", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_ingress_idempotency_created", table_name="ingress_idempotency")
    op.drop_table("ingress_idempotency")
